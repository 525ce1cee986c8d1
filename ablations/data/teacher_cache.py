"""Teacher scores computed once and kept on disk: every student (the trainer's cross-encoder, MICE, MaxSim,
LITE) that distils the same teacher on the same data at the same length reads the same file.

A cache is a pair of files: ``<stem>.parquet`` (one row per (query_id, group, doc_id) with the teacher's
score) and ``<stem>.json`` (its manifest: the key it was computed for, the row count and the parquet's
SHA-256). The key names the teacher (fingerprint of its weights and the max length it scored at) and the
data (every setting that decides which pairs are scored); the manifest also records a hash of the pairs.

- **Reuse**: a cache whose manifest key equals the request and whose file matches its checksum is read.
- **Another teacher or length**: a cache file given explicitly (``--teacher-cache``) that was made for
  another key is refused in one line naming the first differing field and both values; under the default
  location the key is part of the file name, so it cannot happen there.
- **Truncated or corrupt**: a parquet whose size, checksum or row count disagrees with its manifest (or a
  parquet with no manifest) is reported on stderr and recomputed, never used.
- **Resume**: scores are computed in chunks, each kept in ``<stem>.parts/`` as it finishes (atomically),
  so an interrupted run scores only the chunks that are missing; the parts are removed once the cache is
  complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ablations.paths import cache_dir
from ablations.results import atomic_write_bytes, atomic_write_parquet, atomic_write_text
from probe.errors import BadInput
from probe.progress import bar as progress_bar

SCHEMA_VERSION = 1
#: Pairs per resumable chunk.
CHUNK = 1024
_UNCHECKED = object()


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def pairs_digest(table: pd.DataFrame) -> str:
    """SHA-256 of the (query_id, group, doc_id) rows, in order: which pairs a cache (or its parts) scored."""
    h = hashlib.sha256()
    for col in ("query_id", "group", "doc_id"):
        h.update(col.encode())
        h.update("\x1f".join(map(str, table[col].tolist())).encode())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_path(key: dict) -> Path:
    """Where a cache for ``key`` lives by default: ``$MICE_CACHE/teacher/<sha256(key)[:16]>.parquet``."""
    return cache_dir() / "teacher" / f"{_digest(key)[:16]}.parquet"


class TeacherCache:
    """The teacher-score cache at ``path`` (``.parquet``) for ``key``; ``explicit``: the user named the file
    (a key mismatch is then an error, not a miss)."""

    def __init__(self, key: dict, path: Path | None = None, *, explicit: bool | None = None):
        self.key = {"schema_version": SCHEMA_VERSION, **key}
        self.path = Path(path) if path is not None else default_path(self.key)
        if self.path.suffix != ".parquet":
            self.path = self.path.with_suffix(".parquet")
        self.explicit = path is not None if explicit is None else explicit
        self.manifest_path = self.path.with_suffix(".json")
        self.parts = self.path.with_suffix(".parts")
        self._verified = _UNCHECKED  # load()'s outcome: the file is read, hashed and reported once

    # --- reading
    def check_key(self) -> None:
        """Refuse, in one line, an explicit cache file that was made for another teacher or data."""
        manifest = self._manifest()
        if manifest is None or not self.explicit:
            return
        saved = manifest.get("key", {})
        for field in sorted(set(saved) | set(self.key)):
            if saved.get(field) != self.key.get(field):
                raise BadInput(
                    f"teacher cache {str(self.path)!r} was made for {field} {_short(saved.get(field))}, "
                    f"this run needs {field} {_short(self.key.get(field))}; give another --teacher-cache "
                    "or delete that file to recompute"
                )

    def load(self) -> pd.DataFrame | None:
        """The cached table if it is complete and intact for this key, else ``None`` (a damaged cache is
        reported on stderr). Verified once per instance: later calls (``get`` after ``load``) return the
        same outcome without reading, hashing or reporting the file again."""
        if self._verified is _UNCHECKED:
            self._verified = self._verify()
        return self._verified

    def _verify(self) -> pd.DataFrame | None:
        self.check_key()
        manifest = self._manifest()
        if not self.path.exists():
            return None
        if manifest is None:
            return self._damaged("it has no manifest (an interrupted write?)")
        if manifest.get("key") != self.key:
            return None  # another key under the same name (a hash collision): recompute, do not use
        if self.path.stat().st_size != manifest.get("bytes"):
            return self._damaged(f"{self.path.stat().st_size} bytes, manifest says {manifest.get('bytes')}")
        if file_sha256(self.path) != manifest.get("sha256"):
            return self._damaged("its SHA-256 differs from the manifest's")
        try:
            table = pd.read_parquet(self.path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is recomputed
            return self._damaged(f"it cannot be read ({type(exc).__name__})")
        if (
            len(table) != manifest.get("rows")
            or "teacher" not in table
            or not np.isfinite(table["teacher"]).all()
        ):
            return self._damaged("its rows disagree with the manifest")
        return table

    def manifest(self) -> dict | None:
        """The manifest as written (the key, rows, checksum, and the scoring time), or ``None``."""
        return self._manifest()

    def _manifest(self) -> dict | None:
        try:
            data = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _damaged(self, why: str) -> None:
        print(f"teacher cache {self.path} is truncated or corrupt ({why}); recomputing", file=sys.stderr)
        return None

    # --- computing
    def get(
        self,
        build: Callable[[], pd.DataFrame],
        score: Callable[[pd.DataFrame], np.ndarray],
        *,
        progress: bool = True,
        chunk: int = CHUNK,
    ) -> pd.DataFrame:
        """The pairs ``build()`` makes (query_id, group, doc_id) with a ``teacher`` column: read from the
        cache when it is intact for this key, else built, scored with ``score(rows) -> scores`` chunk by
        chunk (resumable across interruptions) and written."""
        cached = self.load()
        if cached is not None:
            return cached
        table = build().reset_index(drop=True)
        self.parts.mkdir(parents=True, exist_ok=True)
        digest = pairs_digest(table)
        marker = self.parts / "pairs.json"
        try:
            stale = json.loads(marker.read_text()) != {"key": self.key, "pairs": digest}
        except (OSError, ValueError):
            stale = True
        if stale:  # parts of another key or other pairs: start over
            shutil.rmtree(self.parts, ignore_errors=True)
            self.parts.mkdir(parents=True)
            atomic_write_text(marker, json.dumps({"key": self.key, "pairs": digest}, sort_keys=True))
        n_chunks = -(-len(table) // chunk)
        scores, scored, started = [], 0, time.time()
        bar = progress_bar(total=len(table), desc="teacher scores", unit="pair", disable=not progress)
        for i in range(n_chunks):
            rows = table.iloc[i * chunk : (i + 1) * chunk]
            part = self.parts / f"part-{i:05d}.npy"
            got = _read_part(part, len(rows))
            if got is None:
                got = np.asarray(score(rows), dtype=np.float64)
                if got.shape != (len(rows),) or not np.isfinite(got).all():
                    raise BadInput(f"the teacher returned {got.shape} scores for {len(rows)} pairs")
                atomic_write_bytes(part, _npy_bytes(got))
                scored += len(rows)
            scores.append(got)
            bar.update(len(rows))
        bar.close()
        out = table.copy()
        out["teacher"] = np.concatenate(scores) if scores else np.zeros(0)
        atomic_write_parquet(out, self.path)
        manifest = {
            "kind": "teacher-cache",
            "key": self.key,
            "pairs": digest,
            "rows": len(out),
            "bytes": self.path.stat().st_size,
            "sha256": file_sha256(self.path),
            # what this call scored and how long it took (less than all rows after a resume)
            "scored_rows": scored,
            "score_seconds": round(time.time() - started, 1),
        }
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(self.parts, ignore_errors=True)
        self._verified = out
        return out


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _read_part(path: Path, n: int) -> np.ndarray | None:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.isfinite(arr).all() else None


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
