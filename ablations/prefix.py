"""Prefix-state cache: layers before the first ablated layer are the full model's, so compute them once.

A mask whose first removal is in layer ``ℓ`` leaves the hidden states entering layer ``ℓ`` equal to the
unmasked model's. For a sweep over many masks of one rerank set, :class:`PrefixCache` keeps the
tokenized batches and the unmasked hidden states entering one layer (``h_ℓ``) for every batch, and
:func:`run_from` finishes a batch from there under a mask: layers ``ℓ … L-1`` (each a call of the model's
own ``encoder.layer[i]`` with the model's padding mask), then pooler and classifier.

The cache moves forward one layer at a time (one unmasked layer per batch), so a sweep that visits its
cells by increasing first masked layer computes every prefix layer exactly once; moving back restarts
from the embeddings. It holds one layer of states: ``pairs × tokens × hidden × 4`` bytes (~0.6 GB for
TREC DL 2019 at depth 100 with MiniLM); past ``max_bytes`` the states are kept in a temporary folder.

With ``cls_only_last`` (default) the last layer is computed for the CLS row only: the score reads the
CLS state alone, so the other rows of the last layer are never needed. Both shortcuts are exact up to
float rounding and tested against the full masked forward (1e-5).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers.masking_utils import create_bidirectional_mask

from probe.attention import AttentionContext, attention_context
from probe.model import CrossEncoder, PairBatch

from .masks import CompiledMask


def supports_prefix(ce: CrossEncoder) -> bool:
    """Whether the model exposes embeddings / encoder.layer / pooler / classifier (BERT family)."""
    base = getattr(ce.model, getattr(ce.model, "base_model_prefix", ""), None)
    return (base is not None and hasattr(base, "embeddings") and hasattr(getattr(base, "encoder", None), "layer")
            and getattr(base, "pooler", None) is not None and hasattr(ce.model, "classifier"))


def _base(ce: CrossEncoder):
    return getattr(ce.model, ce.model.base_model_prefix)


def embed(ce: CrossEncoder, batch: PairBatch) -> torch.Tensor:
    """Hidden states entering layer 0."""
    inputs = batch.to(ce.device).model_inputs()
    return _base(ce).embeddings(input_ids=inputs["input_ids"], token_type_ids=inputs.get("token_type_ids"))


def _padding_mask(ce: CrossEncoder, batch: PairBatch, h: torch.Tensor):
    """The mask the model itself passes to its layers (for its current attention implementation)."""
    return create_bidirectional_mask(config=ce.model.config, inputs_embeds=h,
                                     attention_mask=batch.attention_mask.to(h.device))


def advance(ce: CrossEncoder, batch: PairBatch, h: torch.Tensor, layer: int) -> torch.Tensor:
    """Run unmasked layer ``layer`` on ``h`` (the states entering it)."""
    return _base(ce).encoder.layer[layer](h, _padding_mask(ce, batch, h))


def _head(ce: CrossEncoder, last: torch.Tensor) -> torch.Tensor:
    pooled = _base(ce).pooler(last)
    logits = ce.model.classifier(ce.model.dropout(pooled) if hasattr(ce.model, "dropout") else pooled)
    return ce.logits_to_scores(logits)


def _cls_row_layer(layer_module, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """One BERT layer computed for the CLS row only: ``(b, 1, hidden)``. ``mask``: additive, row 0 only."""
    attn = layer_module.attention.self
    b, n, _ = h.shape
    d = attn.attention_head_size
    q = attn.query(h[:, :1]).view(b, 1, -1, d).transpose(1, 2)
    k = attn.key(h).view(b, n, -1, d).transpose(1, 2)
    v = attn.value(h).view(b, n, -1, d).transpose(1, 2)
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling)
    ctx = ctx.transpose(1, 2).reshape(b, 1, -1)
    out = layer_module.attention.output(ctx, h[:, :1])
    return layer_module.output(layer_module.intermediate(out), out)


def _has_bert_layer(layer_module) -> bool:
    attn = getattr(getattr(layer_module, "attention", None), "self", None)
    return (attn is not None and all(hasattr(attn, a) for a in ("query", "key", "value", "attention_head_size"))
            and all(hasattr(layer_module, a) for a in ("intermediate", "output"))
            and not getattr(layer_module, "add_cross_attention", False))


def run_from(ce: CrossEncoder, batch: PairBatch, h: torch.Tensor, start: int, mask: CompiledMask | None,
             *, cls_only_last: bool = True) -> torch.Tensor:
    """Scores of ``batch`` given ``h``, the states entering layer ``start``, with ``mask`` applied from there.

    Layers before ``start`` must be unaffected by the mask (``start <= mask.first_layer``).
    """
    if mask is not None and mask.first_layer is not None and start > mask.first_layer:
        raise ValueError(f"prefix states enter layer {start} but the mask already removes interactions "
                         f"in layer {mask.first_layer}")
    batch = batch.to(ce.device)
    layers = _base(ce).encoder.layer
    n = len(layers)
    bias = mask.bias_fn(batch.roles, h.dtype) if mask is not None and not mask.is_empty else None
    short = cls_only_last and start < n and _has_bert_layer(layers[n - 1])
    stop = n - 1 if short else n
    with attention_context(ce.model, AttentionContext(bias=bias)):
        pad = _padding_mask(ce, batch, h)
        for i in range(start, stop):
            h = layers[i](h, pad)
    if short:
        row = _row0_mask(batch, h.dtype, bias(n - 1) if bias is not None else None)
        h = _cls_row_layer(layers[n - 1], h, row)
    return _head(ce, h)


def _row0_mask(batch: PairBatch, dtype: torch.dtype, extra: torch.Tensor | None) -> torch.Tensor:
    """Additive mask for the CLS query row: padding (-inf on padded keys) plus the ablation bias row 0."""
    am = batch.attention_mask.to(extra.device if extra is not None else batch.attention_mask.device)
    pad = torch.zeros(am.shape, dtype=dtype, device=am.device).masked_fill_(am == 0, float("-inf"))[:, None, None]
    return pad if extra is None else pad + extra[:, :, :1, :]


class PrefixCache:
    """Tokenized batches of one rerank set and the unmasked states entering one layer, for every batch."""

    def __init__(self, ce: CrossEncoder, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32,
                 batches: Sequence[PairBatch] | None = None, max_bytes: int = 3 << 30,
                 spill_dir: str | Path | None = None):
        self.ce = ce
        self.n = len(pairs)
        self.batches: list[PairBatch] = list(batches) if batches is not None else list(ce.batches(pairs, batch_size))
        self.max_bytes = int(max_bytes)
        self._spill_root = Path(spill_dir) if spill_dir else None
        self._tmp: Path | None = None
        self.layer: int | None = None  # the layer the cached states enter
        self._states: list[torch.Tensor | Path] = []
        self.layers_computed = 0  # unmasked layer passes spent (for reports and tests)

    # --- storage (memory, or a temporary folder when too large)
    def _store(self, i: int, h: torch.Tensor, spill: bool) -> torch.Tensor | Path:
        if not spill:
            return h
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="mice-prefix-", dir=self._spill_root))
        path = self._tmp / f"{i}.pt"
        torch.save(h, path)
        return path

    def _load(self, i: int) -> torch.Tensor:
        s = self._states[i]
        return torch.load(s, map_location=self.ce.device) if isinstance(s, Path) else s

    def nbytes_per_layer(self) -> int:
        hidden = int(self.ce.model.config.hidden_size)
        return sum(int(b.input_ids.numel()) * hidden * 4 for b in self.batches)

    def _ensure(self, layer: int) -> None:
        if not 0 <= layer < self.ce.num_layers:
            raise ValueError(f"layer {layer} out of range 0..{self.ce.num_layers - 1}")
        spill = self.nbytes_per_layer() > self.max_bytes
        with torch.inference_mode():
            if self.layer is None or layer < self.layer:
                self._states = [self._store(i, embed(self.ce, b), spill) for i, b in enumerate(self.batches)]
                self.layer = 0
            while self.layer < layer:
                self._states = [self._store(i, advance(self.ce, b, self._load(i), self.layer), spill)
                                for i, b in enumerate(self.batches)]
                self.layer += 1
                self.layers_computed += len(self.batches)

    def states(self, layer: int) -> Iterator[tuple[PairBatch, torch.Tensor]]:
        """``(batch, states entering layer)`` for every batch (advancing the cache if needed)."""
        self._ensure(layer)
        for i, b in enumerate(self.batches):
            yield b, self._load(i)

    def score(self, mask: CompiledMask | None, *, cls_only_last: bool = True) -> np.ndarray:
        """Scores of every pair under ``mask``, starting from the cached states of its first masked layer."""
        start = 0 if mask is None or mask.first_layer is None else mask.first_layer
        if mask is None or mask.is_empty:
            start = self.ce.num_layers - 1  # unmasked: only the last layer is left to run
        scores = np.zeros(self.n, dtype=np.float32)
        with torch.inference_mode():
            for batch, h in self.states(start):
                scores[batch.index] = run_from(self.ce, batch, h, start, mask,
                                               cls_only_last=cls_only_last).float().cpu().numpy()
        return scores

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._states = []
        self.layer = None

    def __del__(self):  # pragma: no cover - best effort at interpreter exit
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
