"""The MICE model: a MICE configuration plus weights, with the cross-encoder's ``score`` / ``rank`` surface.

    from ablations.mice.model import MiceModel
    mice = MiceModel.load("mice.json")                    # weights: the config's (retrained) or base model
    mice.build_index(docs, "doc-states.safetensors")     # doc-cache plans: document states once per document
    mice.score([(query, doc), ...], batch_size=100)       # same API as probe.model.CrossEncoder
    mice.rank(query, docs)

Scoring groups the pairs by query and runs the configuration's execution plan (:mod:`ablations.mice.plan`):
the query side once per query, the document side from the attached index (or computed on the fly when
none is attached). Training (:mod:`ablations.retrain`) calls :meth:`MiceModel.forward` with autograd;
the weights are the full cross-encoder's (layers past ``drop_layer`` are kept in the folder but never
run, and are not counted in :meth:`num_parameters`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from ablations.mice.config import MiceConfig
from ablations.mice.doc_cache import DocStateIndex, document_chunks, expected_fingerprint
from ablations.mice.plan import MiceBatch, Plan, PlanExecutor, compile_plan
from ablations.paths import resolve_model
from probe.errors import BadInput
from probe.model import CrossEncoder, Pair, Scorer, model_fingerprint
from probe.progress import bar as progress_bar


class MiceModel(Scorer):
    """A cross-encoder's weights run as a MICE configuration (mask, merge and drop layers, plan)."""

    def __init__(
        self, ce: CrossEncoder, config: MiceConfig, *, plan: str | Plan | None = None, name: str | None = None
    ):
        self.ce, self.config = ce, config
        self.plan = plan if isinstance(plan, Plan) else compile_plan(config, plan)
        self.executor = PlanExecutor(ce, config, self.plan)
        self.index: DocStateIndex | None = None
        self.strict_index = True
        self.name = name or f"mice:{Path(ce.name).name}"

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        config: str | os.PathLike | MiceConfig,
        weights: str | None = None,
        *,
        plan: str | None = None,
        device: str | None = None,
    ) -> MiceModel:
        """``config``: a MiceConfig, a ``mice.json`` file or a folder holding one. Weights come from
        ``weights``, else the config's ``weights`` folder (relative to the file), else its ``base_model``."""
        folder = None
        if not isinstance(config, MiceConfig):
            path = Path(config)
            folder = path if path.is_dir() else path.parent
            config = MiceConfig.load(path)
        source = resolve_model(weights or config.weights_source(folder))
        ce = CrossEncoder.from_pretrained(source, max_length=config.max_length, device=device)
        return cls(ce, config, plan=plan, name=f"mice:{source}")

    def save(self, path: str | os.PathLike) -> Path:
        """A folder with the weights (cross-encoder format) and ``mice.json`` pointing at them."""
        path = Path(path)
        self.ce.save(path)
        cfg = MiceConfig.from_dict({**self.config.to_dict(), "weights": ".", "plan": self.plan.shape})
        cfg.save(path / "mice.json")
        return path

    # ------------------------------------------------------------------------------ facts
    @property
    def model(self) -> torch.nn.Module:
        return self.ce.model

    @property
    def device(self) -> torch.device:
        return self.ce.device

    def fingerprint(self) -> str:
        return model_fingerprint(self.ce)

    def num_parameters(self) -> int:
        """Parameters that the plan uses: embeddings, layers ``[0, drop_layer)``, pooler and classifier."""
        base = self.executor.base
        mods = [
            base.embeddings,
            *list(base.encoder.layer)[: self.plan.drop],
            base.pooler,
            self.ce.model.classifier,
        ]
        return sum(p.numel() for m in mods for p in m.parameters())

    def describe(self) -> str:
        idx = f"; index: {self.index.describe()}" if self.index is not None else ""
        return f"{self.config.label}; plan {self.plan.describe()}{idx}"

    # ------------------------------------------------------------------------------ index
    def build_index(
        self,
        docs: Iterable[str],
        path: str | os.PathLike,
        *,
        batch_size: int = 16,
        progress: bool = False,
        attach: bool = True,
    ) -> DocStateIndex:
        index = DocStateIndex.build(self, docs, path, batch_size=batch_size, progress=progress)
        if attach:
            self.index = index
        return index

    def attach_index(
        self, path: str | os.PathLike, *, strict: bool = True, verify: bool = True
    ) -> DocStateIndex:
        """Use precomputed document states. ``strict``: a document missing from the index is an error
        (otherwise that batch's documents are computed on the fly)."""
        if self.plan.shape != "doc-cache":
            raise BadInput(
                f"this MICE model runs plan {self.plan.shape!r}; document-state indexes need 'doc-cache'"
            )
        self.index = DocStateIndex.open(path, expected_fingerprint(self), verify=verify)
        self.strict_index = strict
        return self.index

    def detach_index(self) -> None:
        self.index = None

    # ------------------------------------------------------------------------------ scoring
    def encode(
        self, pairs: Sequence[Pair], index: Sequence[int] | None = None, with_docs: bool = True
    ) -> MiceBatch:
        return self.executor.encode(pairs, index, with_docs=with_docs)

    def forward(self, batch: MiceBatch, shape: str | None = None) -> torch.Tensor:
        """Scores of one batch (autograd if enabled by the caller). A batch encoded without documents
        reads them from the attached index."""
        shape = shape or self.plan.shape
        docs = None
        if batch.d_ids is None:
            if shape != "doc-cache" or self.index is None:
                raise BadInput(
                    "this batch was encoded without documents; it needs the doc-cache plan and an "
                    "attached document-state index"
                )
            docs = self.index.gather(batch.doc_texts, self.device, zero_padding=False)
        return self.executor.forward(batch, shape, docs)

    def batches(self, pairs: Sequence[Pair], batch_size: int = 32) -> Iterable[MiceBatch]:
        """Batches of at most ``batch_size`` pairs of one query each (``batch.index`` maps back)."""
        if batch_size < 1:
            raise BadInput(f"batch_size {batch_size} must be >= 1")
        by_query: dict[str, list[int]] = {}
        for i, (q, _) in enumerate(pairs):
            by_query.setdefault(q, []).append(i)
        from_index = self.index is not None and self.plan.shape == "doc-cache"
        for rows in by_query.values():
            for s in range(0, len(rows), batch_size):
                chunk = rows[s : s + batch_size]
                sub = [pairs[i] for i in chunk]
                need_docs = not from_index or (
                    not self.strict_index and not all(d in self.index for _, d in sub)
                )
                yield self.encode(sub, chunk, with_docs=need_docs)

    def score(self, pairs: Sequence[Pair], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Scores of ``pairs`` (grouped by query). A ``doc-cache`` plan without an attached index computes
        each distinct document's states once for the whole call (in memory-bounded chunks,
        :data:`~ablations.mice.doc_cache.DOC_STATE_BUDGET`), as an index would hold them."""
        if self.index is None and self.plan.shape == "doc-cache" and len(pairs):
            return self._score_documents_once(pairs, batch_size, progress)
        scores = np.zeros(len(pairs), dtype=np.float32)
        was_training = self.ce.model.training
        self.ce.model.eval()
        try:
            with torch.inference_mode():
                bar = progress_bar(
                    total=len(pairs), disable=not progress, desc=f"scoring {self.name[-40:]}", unit="pair"
                )
                for batch in self.batches(pairs, batch_size):
                    scores[batch.index] = self.forward(batch).float().cpu().numpy()
                    bar.update(len(batch))
                bar.close()
        finally:
            self.ce.model.train(was_training)
        return scores

    def _score_documents_once(self, pairs: Sequence[Pair], batch_size: int, progress: bool) -> np.ndarray:
        scores = np.zeros(len(pairs), dtype=np.float32)
        ex, plan = self.executor, self.plan
        itemsize = torch.empty(0, dtype=getattr(torch, self.config.cache_dtype)).element_size()
        per_token = (plan.drop - plan.merge) * 2 * self.ce.model.config.hidden_size * itemsize
        counts = lambda texts: [len(t) for t in ex.tokenize_docs(texts)]  # noqa: E731
        bar = progress_bar(
            total=len(pairs), disable=not progress, desc=f"scoring {self.name[-40:]}", unit="pair"
        )
        was_training, strict = self.ce.model.training, self.strict_index
        self.ce.model.eval()
        try:
            for texts, rows in document_chunks(pairs, counts, per_token):
                pieces = DocStateIndex.compute(self, texts)
                self.index, self.strict_index = DocStateIndex.in_memory(texts, pieces, {}), True
                scores[rows] = self.score([pairs[i] for i in rows], batch_size=batch_size)
                self.index = None
                bar.update(len(rows))
        finally:
            self.index, self.strict_index = None, strict
            self.ce.model.train(was_training)
            bar.close()
        return scores

    def train_scores(self, pairs: Sequence[Pair], shape: str | None = None) -> torch.Tensor:
        """Scores of ``pairs`` in the given order with autograd (training): one batch, documents computed."""
        shape = shape or ("split" if "split" in self.plan.valid else "masked")
        return self.executor.forward(self.encode(pairs), shape)

    @contextlib.contextmanager
    def using_plan(self, shape: str):
        old = self.plan
        self.plan = compile_plan(self.config, shape)
        self.executor.plan = self.plan
        try:
            yield self
        finally:
            self.plan = old
            self.executor.plan = old
