"""Find the result tables under a results folder by their manifests, not by hard-coded paths.

Every table of the common results format is ``<dir>/<table>.parquet`` with ``<dir>/<table>.json`` beside
it (:mod:`ablations.results`); the manifest's ``kind`` (``probe``, ``ablation-run``, ``ablation-sweep``,
``ablation-search``, ...) and ``table`` fields say what it holds. :func:`discover` walks the folder once
and returns a :class:`Results` index; sections ask it for tables by kind and name.

Files the index cannot use are kept as *problems* (a manifest with another schema version, a JSON
that is not a manifest of a table beside it, a parquet with no manifest) so the report can say why a
section is missing instead of failing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from ablations.results import read_manifest, read_table
from probe.errors import BadInput

#: Folders whose parquet files are intermediate (a sweep's per-cell files), not tables of their own.
INTERMEDIATE_DIRS = frozenset({"cells"})


@dataclass(frozen=True)
class Source:
    """One table of the results tree: where it is, its manifest, and a content hash."""

    root: Path
    folder: Path
    table: str
    manifest: dict = field(hash=False, compare=False)

    @property
    def kind(self) -> str:
        return str(self.manifest.get("kind", ""))

    @property
    def path(self) -> Path:
        return self.folder / f"{self.table}.parquet"

    @property
    def rel(self) -> str:
        """The parquet path relative to the results root (posix), as printed in the report."""
        return self.path.relative_to(self.root).as_posix()

    @property
    def rel_folder(self) -> str:
        rel = self.folder.relative_to(self.root).as_posix()
        return "." if rel in ("", ".") else rel

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def read(self) -> pd.DataFrame:
        return read_table(self.folder, self.table)


@dataclass
class Results:
    root: Path  # resolved
    sources: list[Source]
    problems: list[str]
    label: str = (
        ""  # the folder as the user named it (printed: the report does not depend on the checkout path)
    )

    def find(
        self, kind: str | None = None, table: str | None = None, folder: Path | None = None
    ) -> list[Source]:
        return [
            s
            for s in self.sources
            if (kind is None or s.kind == kind)
            and (table is None or s.table == table)
            and (folder is None or s.folder == folder)
        ]

    def one(self, folder: Path, table: str) -> Source | None:
        found = self.find(table=table, folder=folder)
        return found[0] if found else None

    def kinds(self) -> list[str]:
        return sorted({s.kind for s in self.sources})


def _is_intermediate(path: Path, root: Path) -> bool:
    return any(part in INTERMEDIATE_DIRS for part in path.relative_to(root).parts[:-1])


def discover(root: Path) -> Results:
    """Index every table (parquet + manifest) under ``root``, in sorted path order."""
    root = Path(root)
    label = root.as_posix()
    if not root.exists():
        raise BadInput(
            f"--results {str(root)!r} does not exist; give the folder the probe/ablation CLIs wrote "
            "their tables to (e.g. results/)"
        )
    if not root.is_dir():
        raise BadInput(f"--results {str(root)!r} is not a folder")
    root = root.resolve()
    sources: list[Source] = []
    problems: list[str] = []
    described: set[Path] = set()
    for js in sorted(root.rglob("*.json")):
        if _is_intermediate(js, root):
            continue
        parquet = js.with_suffix(".parquet")
        if not parquet.is_file():
            continue  # a side file (sweep.json, search.json): read by the section that needs it
        described.add(parquet)
        rel = js.relative_to(root).as_posix()
        try:
            meta = read_manifest(js.parent, js.stem)
        except BadInput as exc:
            problems.append(f"{rel}: {exc}")
            continue
        if meta.get("table", js.stem) != js.stem:
            problems.append(f"{rel}: manifest names table {meta.get('table')!r}, not {js.stem!r}; ignored")
            continue
        sources.append(Source(root, js.parent, js.stem, meta))
    for pq in sorted(root.rglob("*.parquet")):
        if pq not in described and not _is_intermediate(pq, root) and not pq.name.startswith("."):
            problems.append(
                f"{pq.relative_to(root).as_posix()}: no manifest ({pq.stem}.json) beside it; ignored"
            )
    return Results(root, sources, problems, label)


def side_file(source: Source, name: str) -> dict | None:
    """A JSON file beside a table (``sweep.json``, ``search.json``), or None when absent or unreadable."""
    path = source.folder / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
