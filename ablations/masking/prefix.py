"""Prefix-state cache: layers before the first ablated layer are the full model's, so compute them once.

A mask whose first removal is in layer ``ℓ`` leaves the hidden states entering layer ``ℓ`` equal to the
unmasked model's. For a sweep over many masks of one rerank set, :class:`PrefixCache` keeps the
tokenized batches and the unmasked hidden states entering one layer (``h_ℓ``) for every batch, and
:func:`run_from` finishes a batch from there under a mask: layers ``ℓ … L-1`` (each a call of the model's
own ``encoder.layer[i]`` with the model's padding mask), then pooler and classifier.

The cache moves forward one layer at a time (one unmasked layer per batch), so a sweep that visits its
cells by increasing first masked layer computes every prefix layer exactly once; moving back restarts
from the embeddings. It holds one or two layers of states (``pairs × tokens × hidden × 4`` bytes each,
~0.6 GB for TREC DL 2019 at depth 100 with MiniLM); past ``max_bytes`` they go to a temporary folder.

Two more exact shortcuts (BERT layers), on by default: the last layer is computed for the CLS row only
(the score reads nothing else), and in the first masked layer only the rows whose attention the mask
changes are recomputed — the others are the unmasked output of that layer, which the cache keeps as the
next layer's prefix anyway (removing ``cls2doc`` in layer ℓ recomputes one row per pair there). All paths
are tested against the full masked forward (1e-5).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers.masking_utils import create_bidirectional_mask

from ablations.masking.masks import CompiledMask
from probe.attention import AttentionContext, attention_context
from probe.layers import bert_base, classifier_logits, is_bert_layer, layer_rows, padding_bias
from probe.model import CrossEncoder, PairBatch
from probe.roles import Role


def supports_prefix(ce: CrossEncoder) -> bool:
    """Whether the model exposes embeddings / encoder.layer / pooler / classifier (BERT family) and runs its
    plain forward (not, e.g., a MICE model's masked plan)."""
    return bool(getattr(ce, "prefix_cacheable", True)) and bert_base(ce.model) is not None


def _base(ce: CrossEncoder):
    return getattr(ce.model, ce.model.base_model_prefix)


def embed(ce: CrossEncoder, batch: PairBatch) -> torch.Tensor:
    """Hidden states entering layer 0."""
    inputs = batch.to(ce.device).model_inputs()
    return _base(ce).embeddings(input_ids=inputs["input_ids"], token_type_ids=inputs.get("token_type_ids"))


def _padding_mask(ce: CrossEncoder, batch: PairBatch, h: torch.Tensor):
    """The mask the model itself passes to its layers (for its current attention implementation)."""
    return create_bidirectional_mask(
        config=ce.model.config, inputs_embeds=h, attention_mask=batch.attention_mask.to(h.device)
    )


def advance(ce: CrossEncoder, batch: PairBatch, h: torch.Tensor, layer: int) -> torch.Tensor:
    """Run unmasked layer ``layer`` on ``h`` (the states entering it)."""
    return _base(ce).encoder.layer[layer](h, _padding_mask(ce, batch, h))


def _head(ce: CrossEncoder, last: torch.Tensor) -> torch.Tensor:
    return ce.logits_to_scores(classifier_logits(ce.model, last))


def _rows_layer(layer_module, h: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """One BERT layer computed for the rows ``idx`` ``(b, m)`` of ``h`` only, against every token's keys and
    values (:func:`probe.layers.layer_rows`); ``mask`` is the additive mask of those rows
    ``(b, h|1, m, k)``."""
    b, _, width = h.shape
    rows = h.gather(1, idx[:, :, None].expand(b, idx.shape[1], width))
    return layer_rows(layer_module, rows, h, mask)


def _rows_mask(
    batch: PairBatch, idx: torch.Tensor, dtype: torch.dtype, bias: torch.Tensor | None
) -> torch.Tensor:
    """Additive mask of the rows ``idx``: padded keys -inf, plus those rows of the ablation ``bias``."""
    pad = padding_bias(batch.attention_mask, dtype)
    if bias is None:
        return pad
    b, h, _, k = bias.shape
    return pad + bias.gather(2, idx[:, None, :, None].expand(b, h, idx.shape[1], k))


def _affected_rows(roles: torch.Tensor, sources: set[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (``(b, m)``, padded with 0) whose role is in ``sources``, and which of them are real."""
    sel = torch.isin(roles, torch.tensor(sorted(sources), device=roles.device))
    m = int(sel.sum(1).max()) if sel.numel() else 0
    order = torch.argsort((~sel).to(torch.int8), dim=1, stable=True)[:, :m]
    valid = sel.gather(1, order)
    return torch.where(valid, order, torch.zeros_like(order)), valid


#: Above this share of a batch's positions, the first masked layer is recomputed in full.
ROWS_SHORTCUT_MAX_SHARE = 0.5


def run_from(
    ce: CrossEncoder,
    batch: PairBatch,
    h: torch.Tensor,
    start: int,
    mask: CompiledMask | None,
    *,
    h_next: torch.Tensor | None = None,
    cls_only_last: bool = True,
) -> torch.Tensor:
    """Scores of ``batch`` given ``h``, the states entering layer ``start``, with ``mask`` applied from there.

    Layers before ``start`` must be unaffected by the mask (``start <= mask.first_layer``). Two exact
    shortcuts (BERT layers): with ``cls_only_last`` the last layer is computed for the CLS row only (the
    score reads nothing else); given ``h_next``, the *unmasked* output of layer ``start``, only the rows
    whose attention the mask changes in that layer (tokens of the roles it removes keys from) are
    recomputed there — every other row equals the unmasked output.
    """
    if mask is not None and mask.first_layer is not None and start > mask.first_layer:
        raise ValueError(
            f"prefix states enter layer {start} but the mask already removes interactions "
            f"in layer {mask.first_layer}"
        )
    batch = batch.to(ce.device)
    layers = _base(ce).encoder.layer
    n = len(layers)
    bert = all(is_bert_layer(layer) for layer in layers)
    bias = mask.bias_fn(batch.roles, h.dtype) if mask is not None and not mask.is_empty else None
    cls_idx = torch.zeros(len(batch), 1, dtype=torch.long, device=h.device)
    if h_next is not None and bert and start < n:
        sources = mask.affected_sources(start) if bias is not None else set()
        if start == n - 1 and cls_only_last:  # only CLS counts; it changes only if CLS itself lost keys
            if int(Role.CLS) not in sources:
                return _head(ce, h_next)
            return _head(
                ce, _rows_layer(layers[start], h, cls_idx, _rows_mask(batch, cls_idx, h.dtype, bias(start)))
            )
        idx, valid = _affected_rows(batch.roles, sources)
        if idx.shape[1] <= ROWS_SHORTCUT_MAX_SHARE * h.shape[1]:
            out = h_next.clone()
            if idx.shape[1]:
                rows = _rows_layer(layers[start], h, idx, _rows_mask(batch, idx, h.dtype, bias(start)))
                bi = torch.arange(len(batch), device=h.device)[:, None].expand_as(idx)
                out[bi[valid], idx[valid]] = rows[valid]
            h, start = out, start + 1
    short = cls_only_last and bert and start < n
    stop = n - 1 if short else n
    with attention_context(ce.model, AttentionContext(bias=bias)):
        pad = _padding_mask(ce, batch, h)
        for i in range(start, stop):
            h = layers[i](h, pad)
    if short:
        last = bias(n - 1) if bias is not None else None
        h = _rows_layer(layers[n - 1], h, cls_idx, _rows_mask(batch, cls_idx, h.dtype, last))
    return _head(ce, h)


def _drop(states: list | None) -> None:
    """Delete the spilled files of a list of states (in-memory tensors are just released)."""
    for s in states or ():
        if isinstance(s, Path):
            s.unlink(missing_ok=True)


class PrefixCache:
    """Tokenized batches of one rerank set and the unmasked states entering one layer, for every batch."""

    def __init__(
        self,
        ce: CrossEncoder,
        pairs: Sequence[tuple[str, str]],
        *,
        batch_size: int = 32,
        batches: Sequence[PairBatch] | None = None,
        max_bytes: int = 3 << 30,
        spill_dir: str | Path | None = None,
    ):
        self.ce = ce
        self.n = len(pairs)
        self.batches: list[PairBatch] = (
            list(batches) if batches is not None else list(ce.batches(pairs, batch_size))
        )
        self.max_bytes = int(max_bytes)
        self._spill_root = Path(spill_dir) if spill_dir else None
        self._tmp: Path | None = None
        self.layer: int | None = None  # the layer the cached states enter
        self._states: list[torch.Tensor | Path] = []
        self._next: list[torch.Tensor | Path] | None = None
        self._serial = 0
        self.layers_computed = 0  # unmasked layer passes spent (for reports and tests)

    # --- storage (memory, or a temporary folder when too large)
    def _store(self, i: int, h: torch.Tensor, spill: bool) -> torch.Tensor | Path:
        if not spill:
            return h
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="mice-prefix-", dir=self._spill_root))
        self._serial += 1
        path = self._tmp / f"{i}-{self._serial}.pt"
        torch.save(h, path)
        return path

    def _load(self, states: list, i: int) -> torch.Tensor:
        s = states[i]
        return torch.load(s, map_location=self.ce.device) if isinstance(s, Path) else s

    def nbytes_per_layer(self) -> int:
        hidden = int(self.ce.model.config.hidden_size)
        return sum(int(b.input_ids.numel()) * hidden * 4 for b in self.batches)

    def _advance_all(self, states: list, layer: int, spill: bool) -> list:
        out = [
            self._store(i, advance(self.ce, b, self._load(states, i), layer), spill)
            for i, b in enumerate(self.batches)
        ]
        self.layers_computed += len(self.batches)
        return out

    def _ensure(self, layer: int, with_next: bool = False) -> None:
        if not 0 <= layer < self.ce.num_layers:
            raise ValueError(f"layer {layer} out of range 0..{self.ce.num_layers - 1}")
        spill = 2 * self.nbytes_per_layer() > self.max_bytes
        with torch.inference_mode():
            if self.layer is None or layer < self.layer:
                _drop(self._states), _drop(self._next)
                self._states = [self._store(i, embed(self.ce, b), spill) for i, b in enumerate(self.batches)]
                self.layer, self._next = 0, None
            while self.layer < layer:
                nxt = (
                    self._next
                    if self._next is not None
                    else self._advance_all(self._states, self.layer, spill)
                )
                _drop(self._states)
                self._states, self._next = nxt, None
                self.layer += 1
            if with_next and self._next is None:
                self._next = self._advance_all(self._states, self.layer, spill)

    def states(
        self, layer: int, with_next: bool = False
    ) -> Iterator[tuple[PairBatch, torch.Tensor, torch.Tensor | None]]:
        """``(batch, states entering layer, unmasked output of layer | None)`` for every batch."""
        self._ensure(layer, with_next)
        for i, b in enumerate(self.batches):
            yield b, self._load(self._states, i), (self._load(self._next, i) if with_next else None)

    def score(
        self, mask: CompiledMask | None, *, cls_only_last: bool = True, rows_shortcut: bool = True
    ) -> np.ndarray:
        """Scores of every pair under ``mask``, starting from the cached states of its first masked layer.

        ``rows_shortcut`` also keeps the unmasked output of that layer (a second layer of states) and
        recomputes only the rows the mask changes there (see :func:`run_from`).
        """
        empty = mask is None or mask.is_empty
        start = self.ce.num_layers - 1 if empty else mask.first_layer  # unmasked: only the last layer is left
        scores = np.zeros(self.n, dtype=np.float32)
        with torch.inference_mode():
            for batch, h, h_next in self.states(start, with_next=rows_shortcut):
                scores[batch.index] = (
                    run_from(self.ce, batch, h, start, mask, h_next=h_next, cls_only_last=cls_only_last)
                    .float()
                    .cpu()
                    .numpy()
                )
        return scores

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._states, self._next = [], None
        self.layer = None

    def __del__(self):  # pragma: no cover - best effort at interpreter exit
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
