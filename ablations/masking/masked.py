"""A cross-encoder with interactions removed: same ``score`` / ``rank`` surface as the plain one.

``MaskedCrossEncoder(ce, spec)`` compiles the spec once for the model and, for every batch, routes
attention through :func:`probe.attention.attention_context` with the per-layer bias of
:meth:`ablations.masking.masks.CompiledMask.bias_fn`. No transformers source is edited; without hooks the
fused SDPA kernel runs with the bias folded into its mask.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ablations.masking.masks import CompiledMask, MaskSpec, compile_for
from probe.attention import AttentionContext, attention_context
from probe.model import CrossEncoder, Pair, PairBatch, Scorer
from probe.progress import bar as progress_bar


class MaskedCrossEncoder(Scorer):
    """``ce`` with the interactions of ``mask`` removed. An empty mask runs the model untouched."""

    def __init__(self, ce: CrossEncoder, mask: MaskSpec | CompiledMask):
        self.ce = ce
        self.mask = mask if isinstance(mask, CompiledMask) else compile_for(ce, mask)
        if (self.mask.num_layers, self.mask.num_heads) != (ce.num_layers, ce.num_heads):
            raise ValueError(
                f"mask compiled for {self.mask.num_layers} layers × {self.mask.num_heads} heads, "
                f"model has {ce.num_layers} × {ce.num_heads}"
            )
        self.name = f"{ce.name} − {self.mask.spec.label}"

    @contextlib.contextmanager
    def applied(
        self, batch: PairBatch, ctx: AttentionContext | None = None
    ) -> Iterator[AttentionContext | None]:
        """Within the block, the model runs with this batch's mask (plus ``ctx``'s hooks, if given)."""
        if self.mask.is_empty and ctx is None:
            yield None
            return
        ctx = ctx or AttentionContext()
        if not self.mask.is_empty:
            ctx.bias = self.bias(batch)
        with attention_context(self.ce.model, ctx):
            yield ctx

    def bias(self, batch: PairBatch):
        """The per-layer additive bias of this batch under the mask (an ``AttentionContext.bias``)."""
        return self.mask.bias_fn(batch.roles.to(self.ce.device), next(self.ce.model.parameters()).dtype)

    def forward(self, batch: PairBatch) -> torch.Tensor:
        batch = batch.to(self.ce.device)
        with self.applied(batch):
            return self.ce.forward(batch)

    def hidden_states(self, batch: PairBatch) -> tuple[torch.Tensor, ...]:
        """``(embeddings, layer 0 output, ..., layer L-1 output)`` under the mask, each ``(b, seq,
        hidden)``."""
        batch = batch.to(self.ce.device)
        with torch.inference_mode(), self.applied(batch):
            out = self.ce.model(**batch.model_inputs(), output_hidden_states=True)
        return tuple(out.hidden_states)

    def score(self, pairs: Sequence[Pair], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        scores = np.zeros(len(pairs), dtype=np.float32)
        with torch.inference_mode():
            bar = progress_bar(
                total=len(pairs),
                disable=not progress,
                unit="pair",
                desc=f"scoring {Path(self.ce.name).name} − {self.mask.spec.label}"[:60],
            )
            for batch in self.ce.batches(pairs, batch_size):
                scores[batch.index] = self.forward(batch).float().cpu().numpy()
                bar.update(len(batch))
            bar.close()
        return scores

    def score_batches(self, batches: Sequence[PairBatch], n: int, *, progress: bool = False) -> np.ndarray:
        """Scores for pre-tokenized ``batches`` covering ``n`` pairs (``batch.index`` maps back)."""
        scores = np.zeros(n, dtype=np.float32)
        with torch.inference_mode():
            bar = progress_bar(total=n, disable=not progress, unit="pair", desc=self.mask.spec.label[:40])
            for batch in batches:
                scores[batch.index] = self.forward(batch).float().cpu().numpy()
                bar.update(len(batch))
            bar.close()
        return scores


def with_mask(ce: CrossEncoder, mask: MaskSpec | CompiledMask) -> CrossEncoder | MaskedCrossEncoder:
    """``ce`` with ``mask``'s interactions removed, as a scorer with ``score_batches``.

    A model that carries a mask of its own (a MICE model's view, which has ``removing``) takes the removal
    into that mask — one table, the same weights; any other cross-encoder gets the mask as an attention bias
    (:class:`MaskedCrossEncoder`). An empty mask returns ``ce`` itself.
    """
    compiled = mask if isinstance(mask, CompiledMask) else compile_for(ce, mask)
    if compiled.is_empty:
        return ce
    removing = getattr(ce, "removing", None)
    if removing is not None:
        return removing(compiled.spec)
    return MaskedCrossEncoder(ce, compiled)
