"""Teachers to distil from: a bi-encoder (cosine of sentence embeddings, the free teacher and a baseline)
or a cross-encoder (its logits), behind one :func:`load_teacher`.

A teacher scores *text*, so its tokenizer need not match the student's: only its scores are learnt from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ablations.paths import PRETRAINED_ENCODER, resolve_model
from probe.errors import BadInput
from probe.model import CrossEncoder, Pair, Scorer, model_fingerprint

#: The margin scale each kind of teacher needs by default, so the student's targets sit in the range a
#: fresh head learns in within a short run (margins with a standard deviation near 1). Cosine margins are
#: ~0.1 (x10). The 12-layer MS MARCO cross-encoder's logits span -11..+11 (margin std 4.7 on the DL19
#: preset's 8,424 pairs, when it had 500 dev-small queries): at scale 1, 300 steps left the margin-MSE
#: loss at its start (~20, the teacher's mean squared margin) and DL 2019 at 0.357, below BM25, so its
#: margins are scaled by 0.2.
DEFAULT_SCALE = {"bi-encoder": 10.0, "cross-encoder": 0.2}


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


class CrossEncoderTeacher:
    """A cross-encoder as the ``teacher`` of :func:`ablations.data.training.distillation_groups` (its
    logits)."""

    kind = "cross-encoder"

    def __init__(self, ce: CrossEncoder):
        self.ce = ce
        self.name = f"cross-encoder:{model_fingerprint(ce)}"
        self.max_length = ce.max_length  # part of the teacher cache's key

    def score_ids(self, pairs, queries: dict, docs: dict, *, batch_size: int = 64, progress: bool = False):
        return self.ce.score(
            [(queries[q], docs[d]) for q, d in pairs], batch_size=batch_size, progress=progress
        )


BiEncoder.kind = "bi-encoder"


def _architectures(path: Path) -> list[str]:
    try:
        return json.loads((path / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return []


def is_bi_encoder(path: str | Path) -> bool:
    """A sentence-transformers bi-encoder folder: ``modules.json`` and no sequence-classification head (a
    sentence-transformers cross-encoder folder can hold a ``modules.json`` too)."""
    path = Path(path).expanduser()
    return (path / "modules.json").is_file() and not any(
        a.endswith("ForSequenceClassification") for a in _architectures(path)
    )


def teacher_kind(name_or_path: str) -> str:
    """``"cross-encoder"`` or ``"bi-encoder"`` for a model name or folder, from its files (a
    sentence-transformers ``modules.json``, or a ``*ForSequenceClassification`` config); anything else is
    refused in one line."""
    path = Path(resolve_model(name_or_path)).expanduser()
    if not path.is_dir():
        raise BadInput(
            f"teacher {name_or_path!r}: no model folder at {path}; expected a cross-encoder folder or name "
            "(e.g. reference) or a sentence-transformers bi-encoder (e.g. minilm-l6)"
        )
    if is_bi_encoder(path):
        return "bi-encoder"
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    if any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        if config.get("num_labels", len(config.get("id2label") or {0: 0})) != 1:
            raise BadInput(
                f"teacher {name_or_path!r} ({path}) has {len(config.get('id2label') or {})} output labels; "
                "a cross-encoder teacher must give one relevance logit per pair"
            )
        return "cross-encoder"
    found = ", ".join(config.get("architectures") or []) or "no architectures in config.json"
    raise BadInput(
        f"teacher {name_or_path!r} ({path}) is not a scorer ({found}): expected a cross-encoder "
        "(a *ForSequenceClassification model with one logit) or a sentence-transformers bi-encoder "
        "folder (with modules.json)"
    )


def load_teacher(name_or_path: str, *, max_length: int):
    """The teacher a name or folder names (:func:`teacher_kind`), scoring at ``max_length`` tokens (score
    the teacher at the length the student sees)."""
    if teacher_kind(name_or_path) == "bi-encoder":
        return BiEncoder(name_or_path, max_length=max_length)
    ce = CrossEncoder.from_pretrained(resolve_model(name_or_path), max_length=max_length)
    return CrossEncoderTeacher(ce)
