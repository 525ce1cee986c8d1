"""The one results format: tidy parquet tables, each with a JSON manifest beside it.

``<dir>/<table>.parquet`` + ``<dir>/<table>.json``. Every write goes to a temporary file in the same
folder and is renamed into place, so a reader (or a killed run) never sees a truncated file. Appends
rewrite the table atomically; tables here are small (one row per query × measure × run).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

from probe.errors import BadInput

SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]


def _umask_mode() -> int:
    """The mode a new file gets under the process umask (``mkstemp`` would give 0600 whatever it is)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def shareable(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or every file under a folder) the mode new files get under the umask:
    safetensors and transformers write weights 0600, and a shared model or index must be readable."""
    path = Path(path)
    mode = _umask_mode()
    for f in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        f.chmod(mode)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _umask_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, _umask_mode())
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _writable_folder(folder: Path, what: str, value: Path) -> None:
    """``folder`` (existing or to be created) can hold new files; else one line naming ``what``."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BadInput(f"{what} {str(value)!r}: {str(existing)!r} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".mice-write-check.")
    except OSError as exc:
        raise BadInput(
            f"{what} {str(value)!r}: cannot write in {str(existing)!r} ({exc.strerror}); choose a "
            "writable folder"
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_output_dir(path: str | Path, what: str = "--out") -> Path:
    """Refuse, before any work, an output folder that is a file or cannot be written (one line naming
    ``what``)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise BadInput(f"{what} {str(path)!r} is a file; expected a folder for the results")
    _writable_folder(path, what, path)
    return path


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """Refuse, before any work, an output file that is a folder or whose folder cannot be written."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise BadInput(f"{what} {str(path)!r} is a folder; expected a file name")
    _writable_folder(path.parent if str(path.parent) else Path("."), what, path)
    return path


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return (rev + ("-dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name: ``platform.processor()`` where it names one (macOS, Windows), else Linux's
    ``/proc/cpuinfo`` "model name" line (``platform.processor()`` is empty or just the architecture
    there), else the architecture."""
    name = platform.processor()
    if name and name != platform.machine():
        return name
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return name or platform.machine()


def environment() -> dict:
    versions = {}
    for pkg in ("torch", "transformers", "sentence-transformers", "ir-measures", "bm25s", "mice-toolkit"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }


def manifest(**fields) -> dict:
    """A manifest with the provenance every table carries, plus ``fields``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_revision": git_revision(),
        "environment": environment(),
        **fields,
    }


def write_table(df: pd.DataFrame, out_dir: Path, table: str, meta: dict) -> Path:
    """Write ``<out_dir>/<table>.parquet`` and its manifest atomically; returns the parquet path."""
    out_dir = Path(out_dir)
    path = out_dir / f"{table}.parquet"
    atomic_write_parquet(df, path)
    atomic_write_text(
        out_dir / f"{table}.json",
        json.dumps({**meta, "table": table, "rows": len(df)}, indent=2, default=str) + "\n",
    )
    return path


def append_table(df: pd.DataFrame, out_dir: Path, table: str, meta: dict) -> Path:
    """Append rows to a table (rewritten atomically). The manifest keeps the first run's fields plus
    ``runs``."""
    out_dir = Path(out_dir)
    old = read_table(out_dir, table) if (out_dir / f"{table}.parquet").exists() else None
    combined = df if old is None else pd.concat([old, df], ignore_index=True)
    prev = read_manifest(out_dir, table) if (out_dir / f"{table}.json").exists() else {}
    runs = prev.get("runs", []) + [meta]
    return write_table(combined, out_dir, table, {**(prev or meta), "runs": runs})


def read_table(out_dir: Path, table: str) -> pd.DataFrame:
    path = Path(out_dir) / f"{table}.parquet"
    if not path.is_file():
        raise BadInput(f"results table {str(path)!r} does not exist")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise BadInput(f"results table {str(path)!r} is unreadable: {exc}") from None


def read_manifest(out_dir: Path, table: str) -> dict:
    path = Path(out_dir) / f"{table}.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"manifest {str(path)!r} is missing or not JSON: {exc}") from None
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise BadInput(
            f"manifest {str(path)!r} has schema_version {meta.get('schema_version')!r}; "
            f"this toolkit reads {SCHEMA_VERSION}"
        )
    return meta
