"""A bi-encoder scorer (cosine of sentence embeddings): a baseline and the free teacher to distil from."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ablations.paths import PRETRAINED_ENCODER, resolve_model
from probe.errors import BadInput
from probe.model import Pair, Scorer


class BiEncoder(Scorer):
    """``cos(embed(query), embed(document))`` with a sentence-transformers model (default
    all-MiniLM-L6-v2)."""

    def __init__(self, name_or_path: str = PRETRAINED_ENCODER, *, max_length: int = 256):
        from sentence_transformers import SentenceTransformer

        path = resolve_model(name_or_path)
        try:
            self.model = SentenceTransformer(path, device="cuda" if torch.cuda.is_available() else "cpu")
        except (OSError, ValueError) as exc:
            raise BadInput(f"cannot load bi-encoder {name_or_path!r}: {exc}") from None
        self.model.max_seq_length = max_length
        self.max_length = max_length  # part of the teacher cache's key
        self.name = f"bi-encoder:{name_or_path}"

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Unit-normalised embeddings, one row per text (sorted by length internally by
        sentence-transformers)."""
        return self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )

    def score_ids(
        self,
        pairs: Sequence[tuple[str, str]],
        queries: dict[str, str],
        docs: dict[str, str],
        *,
        batch_size: int = 64,
        progress: bool = False,
    ) -> np.ndarray:
        """Scores for ``(query_id, doc_id)`` pairs, embedding each distinct query and document once."""
        qids = sorted({q for q, _ in pairs})
        dids = sorted({d for _, d in pairs})
        q_emb = dict(zip(qids, self.embed([queries[q] for q in qids], batch_size=batch_size)))
        d_emb = dict(zip(dids, self.embed([docs[d] for d in dids], batch_size=batch_size, progress=progress)))
        return np.array([float(q_emb[q] @ d_emb[d]) for q, d in pairs], dtype=np.float32)

    def score(self, pairs: Sequence[Pair], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        queries = {q: q for q, _ in pairs}
        docs = {d: d for _, d in pairs}
        return self.score_ids(list(pairs), queries, docs, batch_size=batch_size, progress=progress)
