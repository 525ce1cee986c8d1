"""One interception point for self-attention, shared by the probe (capture) and the ablations (masks).

Inside ``with attention_context(model, ctx):`` every self-attention module of a supported Hugging Face
model (:mod:`probe.families`: BERT, ELECTRA, RoBERTa, XLM-RoBERTa, DistilBERT, ModernBERT) runs the
toolkit's attention function, registered with transformers' ``AttentionInterface`` (no transformers
source is edited). On exit the model's own implementation is restored, even on error.

The context supplies, per layer:

- ``bias(layer) -> Tensor | None`` — an additive mask ``(batch|1, heads|1, q, k)`` (0 keeps, -inf removes)
  added to the model's padding mask: this is how interactions are removed;
- TransformerLens-named hook points, called with the tensor and able to replace it:
  ``blocks.{layer}.attn.hook_attn_scores`` (pre-softmax, masks applied, ``(batch, heads, q, k)``) and
  ``blocks.{layer}.attn.hook_pattern`` (post-softmax).

When no hook is registered for a layer the fused ``scaled_dot_product_attention`` kernel runs (with the
bias folded into its mask), so masking costs almost nothing; patterns are only materialised on request.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from .families import self_attention_modules

IMPLEMENTATION = "mice_toolkit"
HOOK_SCORES = "blocks.{layer}.attn.hook_attn_scores"
HOOK_PATTERN = "blocks.{layer}.attn.hook_pattern"

Hook = Callable[[torch.Tensor, str], torch.Tensor | None]


def hook_name(kind: str, layer: int) -> str:
    """``hook_name("pattern", 3) == "blocks.3.attn.hook_pattern"``."""
    return {"pattern": HOOK_PATTERN, "attn_scores": HOOK_SCORES}[kind].format(layer=layer)


@dataclass
class AttentionContext:
    """What the toolkit's attention does in each layer. Plain data; build one per batch or reuse."""

    bias: Callable[[int], torch.Tensor | None] | None = None
    hooks: dict[str, list[Hook]] = field(default_factory=dict)

    def add_hook(self, name: str, fn: Hook) -> None:
        self.hooks.setdefault(name, []).append(fn)

    def _run_hooks(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        for fn in self.hooks.get(name, ()):
            out = fn(tensor, name)
            if out is not None:
                tensor = out
        return tensor


def _as_additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Drop-in for transformers' attention functions: returns ``(output (b, q, h, d), weights | None)``."""
    ctx: AttentionContext | None = getattr(module, "_mice_ctx", None)
    layer = getattr(module, "_mice_layer", None)
    mask = _as_additive(attention_mask, query.dtype)
    if ctx is not None and ctx.bias is not None:
        extra = ctx.bias(layer)
        if extra is not None:
            mask = extra.to(query.dtype) if mask is None else mask + extra.to(query.dtype)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    wants = ctx is not None and (
        HOOK_SCORES.format(layer=layer) in ctx.hooks or HOOK_PATTERN.format(layer=layer) in ctx.hooks
    )
    if not wants:
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling
        )
        return out.transpose(1, 2).contiguous(), None
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if mask is not None:
        scores = scores + mask
    scores = ctx._run_hooks(HOOK_SCORES.format(layer=layer), scores)
    pattern = ctx._run_hooks(HOOK_PATTERN.format(layer=layer), torch.softmax(scores, dim=-1))
    pattern_d = F.dropout(pattern, p=dropout, training=module.training)
    return torch.matmul(pattern_d, value).transpose(1, 2).contiguous(), pattern


AttentionInterface.register(IMPLEMENTATION, _attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, sdpa_mask)


@contextlib.contextmanager
def attention_context(model, ctx: AttentionContext) -> Iterator[AttentionContext]:
    """Route every self-attention of ``model`` through the toolkit for the span of the block."""
    mods = self_attention_modules(model)
    configs = {id(m.config): m.config for m in mods} | {id(model.config): model.config}
    saved = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for k, c in configs.items():
            c._attn_implementation = IMPLEMENTATION
        for i, m in enumerate(mods):
            m._mice_ctx, m._mice_layer = ctx, i
        yield ctx
    finally:
        for k, c in configs.items():
            c._attn_implementation = saved[k]
        for m in mods:
            m._mice_ctx = m._mice_layer = None
