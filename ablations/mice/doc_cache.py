"""The document-state index: per document, the keys and values a ``doc-cache`` plan reads, on disk.

When no document token ever reads a query-side token and document positions are canonical, the
document side's states depend on the document alone (:mod:`ablations.mice.plan`). :meth:`DocStateIndex.build`
computes, once per document, the keys and values of every layer ``merge … drop-1`` and writes them into
one safetensors file:

- ``kv`` — ``(tokens, layers, 2, hidden)`` (float32, exact; or float16, half the size), the document
  tokens of all documents one after the other (``doc`` tokens then ``sep2``);
- ``offsets`` — ``(documents + 1,)`` start row of each document; ``keys`` — ``(documents, 16)`` uint8,
  the blake2b digest of each document's text (how a query-time batch finds its documents);
- header metadata: format name and version, a **fingerprint** (model weights, the MICE configuration's
  hash, tokenizer vocabulary, cached layers, dtype) and a blake2b checksum of the tensors.

:meth:`DocStateIndex.open` refuses, with one line each, a missing file, a file that is not an index, an
index of another format version, one built by another model or configuration (fingerprint mismatch) and
a corrupt one (unreadable, or checksum mismatch) — never silently wrong scores.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ablations.mice.plan import DocStates, doc_key
from ablations.results import shareable
from probe.errors import BadInput
from probe.progress import bar as progress_bar
from probe.roles import Role

#: Bytes of document states a scorer holds at once when it computes them itself for one ``score`` call
#: (no index attached): the distinct documents are processed in chunks of at most this size.
DOC_STATE_BUDGET = 2 * 2**30

FORMAT = "mice-doc-states"
FORMAT_VERSION = 1
_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def tokenizer_hash(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha1(json.dumps([type(tokenizer).__name__, vocab]).encode()).hexdigest()[:16]


def expected_fingerprint(model) -> dict:
    """What an index built for ``model`` (a :class:`ablations.mice.MiceModel`) must carry."""
    plan = model.plan
    return {
        "model": model.fingerprint(),
        "config": model.config.fingerprint(),
        "tokenizer": tokenizer_hash(model.ce.tokenizer),
        "layers": [plan.merge, plan.drop],
        "dtype": model.config.cache_dtype,
    }


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(np.ascontiguousarray(tensors[name].numpy()).data)
    return h.hexdigest()


def document_chunks(
    pairs: Sequence[tuple[str, str]],
    token_counts: Callable[[list[str]], list[int]],
    bytes_per_token: int,
    budget: int | None = None,
) -> Iterator[tuple[list[str], list[int]]]:
    """The distinct documents of ``pairs`` (first appearance order) in chunks whose states
    (``token_counts(texts)[i] * bytes_per_token`` each) fit in ``budget`` bytes, each with the positions
    of the pairs whose document it holds: documents are computed once per call, memory stays bounded
    (``budget`` default: :data:`DOC_STATE_BUDGET`; a document larger than it is a chunk of its own)."""
    budget = DOC_STATE_BUDGET if budget is None else budget
    texts = list(dict.fromkeys(d for _, d in pairs))
    if not texts:
        return
    sizes = [n * bytes_per_token for n in token_counts(texts)]
    chunk_of, chunks, used = {}, [[]], 0
    for text, size in zip(texts, sizes):
        if chunks[-1] and used + size > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(text)
        chunk_of[text] = len(chunks) - 1
        used += size
    rows: list[list[int]] = [[] for _ in chunks]
    for i, (_, d) in enumerate(pairs):
        rows[chunk_of[d]].append(i)
    yield from zip(chunks, rows)


def _pack(texts: list[str], pieces: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-document pieces concatenated: (states, offsets, blake2b keys of the texts)."""
    lengths = torch.tensor([len(p) for p in pieces], dtype=torch.long)
    offsets = torch.zeros(len(texts) + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(lengths, 0)
    keys = torch.tensor(np.frombuffer(b"".join(doc_key(t) for t in texts), dtype=np.uint8).reshape(-1, 16))
    return torch.cat(pieces, 0).contiguous(), offsets, keys


@dataclass
class DocStateIndex:
    path: Path
    fingerprint: dict
    kv: torch.Tensor  # (tokens, layers, 2, H)
    offsets: torch.Tensor  # (n + 1,)
    rows: dict[bytes, int]

    # ------------------------------------------------------------------------------ size
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        return int(self.kv.numel() * self.kv.element_size())

    @property
    def file_bytes(self) -> int:
        """Size of the index file (the states' size if the file is gone)."""
        return self.path.stat().st_size if self.path.is_file() else self.nbytes

    @property
    def bytes_per_doc(self) -> float:
        return self.nbytes / max(1, len(self))

    @property
    def bytes_per_token(self) -> int:
        return int(self.kv[0].numel() * self.kv.element_size()) if len(self.kv) else 0

    def describe(self) -> str:
        return (
            f"{len(self)} documents, {len(self.kv)} tokens, {self.file_bytes / 2**20:.1f} MiB on disk "
            f"({self.bytes_per_doc / 1024:.1f} KiB per document, {self.bytes_per_token} B per token; "
            f"{self.fingerprint.get('dtype')})"
        )

    def __contains__(self, text: str) -> bool:
        return doc_key(text) in self.rows

    # ------------------------------------------------------------------------------ lookup
    def gather(
        self,
        texts: list[str],
        device: torch.device | str = "cpu",
        dtype=torch.float32,
        *,
        zero_padding: bool = True,
    ) -> DocStates:
        """Padded document states of ``texts`` (in order). A text missing from the index is an error.

        ``zero_padding`` writes zeros at padding positions (what an encoder's masked output holds); a MICE
        plan masks them out anyway and skips it.
        """
        try:
            rows = [self.rows[doc_key(t)] for t in texts]
        except KeyError:
            missing = [t for t in texts if doc_key(t) not in self.rows]
            raise BadInput(
                f"{len(missing)} document(s) are not in the document-state index {str(self.path)!r} "
                f"(e.g. {missing[0][:50]!r}); rebuild it over these documents"
            ) from None
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        start, stop = self.offsets[rows_t], self.offsets[rows_t + 1]
        lengths = stop - start
        width = int(lengths.max())
        ar = torch.arange(width)
        mask = ar[None, :] < lengths[:, None]
        idx = torch.where(mask, start[:, None] + ar[None, :], torch.zeros_like(start)[:, None])
        flat = self.kv.reshape(len(self.kv), -1)
        kv = flat.index_select(0, idx.flatten()).view(len(rows), width, *self.kv.shape[1:])
        if zero_padding:
            kv[~mask] = 0
        if kv.dtype != dtype:
            kv = kv.to(dtype)
        roles = torch.full(mask.shape, int(Role.PAD), dtype=torch.long)
        roles[mask] = int(Role.DOC)
        roles[torch.arange(len(rows)), lengths - 1] = int(Role.SEP2)
        return DocStates(kv.to(device), mask.long().to(device), roles.to(device))

    # ------------------------------------------------------------------------------ build / open
    @staticmethod
    def compute(
        model, texts: list[str], *, batch_size: int = 16, progress: bool = False
    ) -> list[torch.Tensor]:
        """The states of each text of ``texts`` for ``model`` (a MiceModel with a ``doc-cache`` plan), in
        order: ``(tokens_i, layers, 2, hidden)`` each, in the configuration's cache dtype, computed in
        length-sorted batches."""
        if model.plan.shape != "doc-cache":
            raise BadInput(
                f"this MICE model runs plan {model.plan.shape!r}; a document-state index needs the "
                f"'doc-cache' plan (valid here: {', '.join(model.plan.valid)})"
            )
        ex = model.executor
        tok = ex.tokenize_docs(texts)
        order = np.argsort([-len(t) for t in tok], kind="stable")
        dtype = _DTYPES[model.config.cache_dtype]
        pieces: list[torch.Tensor | None] = [None] * len(texts)
        bar = progress_bar(total=len(texts), disable=not progress, desc="document states", unit="doc")
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                rows = order[s : s + batch_size].tolist()
                b = ex.encode([("x", texts[i]) for i in rows])  # the query is not used
                b = b.to(ex.device)
                states = ex.doc_states(b.d_ids, b.d_mask, b.d_roles, b.d_pos)
                lengths = b.d_mask.sum(1).tolist()
                for j, i in enumerate(rows):
                    pieces[i] = states.kv[j, : lengths[j]].to("cpu", dtype).clone()
                bar.update(len(rows))
        bar.close()
        return pieces

    @classmethod
    def build(
        cls, model, docs: Iterable[str], path: str | Path, *, batch_size: int = 16, progress: bool = False
    ) -> DocStateIndex:
        """Compute and write the states of every distinct text of ``docs`` for ``model`` (a MiceModel)."""
        texts = list(dict.fromkeys(docs))
        if not texts:
            raise BadInput("no documents to index")
        pieces = cls.compute(model, texts, batch_size=batch_size, progress=progress)
        return cls.write(path, texts, pieces, expected_fingerprint(model))

    @classmethod
    def in_memory(cls, texts: list[str], pieces: list[torch.Tensor], fingerprint: dict) -> DocStateIndex:
        """An index held in memory only (no file): what a scorer builds for the documents of one call."""
        kv, offsets, _ = _pack(texts, pieces)
        return cls(Path(""), fingerprint, kv, offsets, {doc_key(t): i for i, t in enumerate(texts)})

    @classmethod
    def write(
        cls, path: str | Path, texts: list[str], pieces: list[torch.Tensor], fingerprint: dict
    ) -> DocStateIndex:
        """Write per-document token states ``pieces[i] (tokens_i, ...)`` of ``texts[i]`` (any per-token shape:
        MICE keys/values, or the token embeddings of a late-interaction model)."""
        kv, offsets, keys = _pack(texts, pieces)
        tensors = {"kv": kv, "offsets": offsets, "keys": keys}
        meta = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "fingerprint": json.dumps(fingerprint),
            "checksum": _checksum(tensors),
            "documents": str(len(texts)),
        }
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(tensors, str(tmp), metadata=meta)
        shareable(tmp)  # safetensors writes 0600
        os.replace(tmp, path)
        return cls(path, fingerprint, tensors["kv"], offsets, {doc_key(t): i for i, t in enumerate(texts)})

    @classmethod
    def open(cls, path: str | Path, expected: dict | None = None, *, verify: bool = True) -> DocStateIndex:
        """Read an index; with ``expected`` (see :func:`expected_fingerprint`) refuse another model's."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise BadInput(
                f"document-state index {str(path)!r} does not exist; build it with "
                "`python -m ablations.export --index` or MiceModel.build_index"
            )
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise BadInput(
                        f"{str(path)!r} is not a MICE document-state index (format "
                        f"{meta.get('format')!r}, expected {FORMAT!r})"
                    )
                if meta.get("format_version") != str(FORMAT_VERSION):
                    raise BadInput(
                        f"document-state index {str(path)!r} has format version "
                        f"{meta.get('format_version')!r}; this toolkit reads {FORMAT_VERSION}: rebuild it"
                    )
                fingerprint = json.loads(meta["fingerprint"])
                if expected is not None and fingerprint != expected:
                    diff = [k for k in expected if fingerprint.get(k) != expected[k]]
                    raise BadInput(
                        f"document-state index {str(path)!r} was built by another model or configuration "
                        f"({', '.join(diff)} differ: index {[fingerprint.get(k) for k in diff]}, "
                        f"this model {[expected[k] for k in diff]}); rebuild it for this model"
                    )
                tensors = {k: fh.get_tensor(k) for k in ("kv", "offsets", "keys")}
        except BadInput:
            raise
        except Exception as exc:  # safetensors / json raise several types for a damaged file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise BadInput(
                f"document-state index {str(path)!r} is corrupt or unreadable ({first}); rebuild it"
            ) from None
        if verify and _checksum(tensors) != meta.get("checksum"):
            raise BadInput(f"document-state index {str(path)!r} is corrupt (checksum mismatch); rebuild it")
        keys = tensors["keys"].numpy()
        offsets = tensors["offsets"]
        if len(offsets) != len(keys) + 1 or int(offsets[-1]) != len(tensors["kv"]):
            raise BadInput(
                f"document-state index {str(path)!r} is corrupt (offsets do not match the states); rebuild it"
            )
        rows = {bytes(k): i for i, k in enumerate(keys)}
        return cls(path, fingerprint, tensors["kv"], offsets, rows)
