"""Sweep the grid interaction × layer (× head group): one ablation run per cell, resumable.

Library behind ``python -m ablations.sweep`` [--interactions query2doc doc2query cls2query cls2doc] [--mode
single|from|upto]
                              [--layer-units each | 0-1 2-3 ...] [--head-groups 0-5 6-11] [--base mice-step0]
                              [--model ...] [--collection ...] [--out results/ablations/sweep]

A cell removes one interaction (a name or a '+' group) in one layer unit (``single``: that layer only;
``from``: that layer to the last; ``upto``: layer 0 to that layer), optionally in one head group, on top
of the optional ``--base`` mask. Cells run in order of their first masked layer so the prefix-state cache
(:mod:`ablations.masking.prefix`) computes every unmasked prefix layer once.

Resumable: every finished cell is written atomically to ``<out>/cells/<run_id>.{per_query,summary}.parquet``
(summary last, so it marks the cell done) and the consolidated ``<out>/per_query.parquet`` and
``<out>/summary.parquet`` are rewritten atomically from the cells in grid order. Killed at any point
(even ``kill -9``) and rerun with the same arguments, the sweep skips finished cells and never leaves a
truncated table. ``<out>/sweep.json`` records the sweep; another sweep in the same folder is refused.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from ablations.experiments.runner import Experiment, RunResult, pbar, run_meta
from ablations.masking.interactions import SWEEP_INTERACTIONS as DEFAULT_INTERACTIONS
from ablations.masking.interactions import SWEEP_MODES as MODES
from ablations.masking.interactions import check_interaction, valid_names
from ablations.masking.masks import (
    CompiledMask,
    MaskSpec,
    Rule,
    format_ranges,
    parse_ranges,
    resolve_ranges,
)
from ablations.masking.spec import base_spec  # noqa: F401 - re-exported
from ablations.results import atomic_write_parquet, atomic_write_text, manifest, write_table
from probe.errors import BadInput

CELL_DELAY_ENV = "MICE_SWEEP_CELL_DELAY"  # seconds to sleep after each cell (test hook for kill/resume)


@dataclass
class Cell:
    index: int
    interaction: str
    layers: str
    heads: str
    spec: MaskSpec

    @property
    def label(self) -> str:
        return self.spec.label


@dataclass
class SweepConfig:
    """The grid. ``layer_units``: ``["each"]`` (every layer) or layer-range strings; ``head_groups``: head
    range strings (``[]`` = all heads together); ``base``: rules added to every cell."""

    interactions: list[str] = field(default_factory=lambda: list(DEFAULT_INTERACTIONS))
    layer_units: list[str] = field(default_factory=lambda: ["each"])
    mode: str = "single"
    head_groups: list[str] = field(default_factory=list)
    base: MaskSpec = field(default_factory=MaskSpec)

    def __post_init__(self):
        if self.mode not in MODES:
            raise BadInput(f"--mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if not self.interactions:
            raise BadInput(f"no interactions to sweep; give --interactions NAME ... ({valid_names()})")
        for name in self.interactions:
            check_interaction(name)
        for unit in self.layer_units:
            if unit != "each":
                parse_ranges(unit, "layers")
        for group in self.head_groups:
            parse_ranges(group, "heads")
        if isinstance(self.base, dict):
            self.base = MaskSpec.from_dict(self.base)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["base"] = self.base.to_dict()
        return d

    def cells(self, num_layers: int, num_heads: int) -> tuple[list[Cell], list[str]]:
        """The grid in order (interaction, layer unit, head group) and any clamping notices."""
        notices: list[str] = []
        units: list[str] = []
        for unit in self.layer_units:
            if unit == "each":
                picked = list(range(num_layers))
            else:
                picked, notice = resolve_ranges(unit, num_layers, "layers")
                if notice:
                    notices.append(notice)
                picked = [format_ranges(picked)] if self.mode == "single" else list(picked)
                if self.mode == "single":
                    units.extend(picked)
                    continue
            for layer in picked:
                units.append(
                    {
                        "single": str(layer),
                        "from": format_ranges(range(layer, num_layers)),
                        "upto": format_ranges(range(layer + 1)),
                    }[self.mode]
                )
        units = list(dict.fromkeys(units))
        groups = self.head_groups or ["all"]
        for g in groups:  # the layers' rule: clamped at the end (noted), refused when starting past it
            notice = resolve_ranges(g, num_heads, "heads")[1]
            if notice:
                notices.append(notice)
        cells = []
        for inter in self.interactions:
            for unit in units:
                for g in groups:
                    spec = self.base + MaskSpec([Rule(inter, unit, g)])
                    cells.append(Cell(len(cells), inter, unit, g, spec))
        return cells, notices


def _clean_tmp(folder: Path) -> None:
    """Remove temporary files a killed writer may have left (``.name.*.tmp``)."""
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


class Sweep:
    """Runs the cells of a :class:`SweepConfig` on an :class:`Experiment` into ``out_dir`` (resumable)."""

    def __init__(
        self,
        exp: Experiment,
        config: SweepConfig,
        out_dir: Path,
        *,
        prefix: bool = True,
        progress: bool = False,
    ):
        self.exp, self.config, self.out = exp, config, Path(out_dir)
        self.cells_dir = self.out / "cells"
        self.prefix = prefix
        self.progress = progress
        self.cells, self.notices = config.cells(exp.ce.num_layers, exp.ce.num_heads)
        self.compiled: dict[int, CompiledMask] = {c.index: exp.compile(c.spec) for c in self.cells}
        for c in self.cells:
            self.notices.extend(self.compiled[c.index].notices)
        self.notices = list(dict.fromkeys(self.notices))
        self.run_ids = {c.index: exp.run_id(c.spec) for c in self.cells}
        self.computed = 0  # cells computed by this process

    # --- bookkeeping
    def identity(self) -> dict:
        s = self.exp.settings
        return {
            "config": self.config.to_dict(),
            "model_fingerprint": self.exp.fingerprint,
            "collection": self.exp.rs.name,
            "n_queries": len(self.exp.rs.queries),
            "depth": self.exp.depth,
            "max_length": self.exp.ce.max_length,
            "seed": s.seed,
            "n_boot": s.n_boot,
            "tie_tol": s.tie_tol,
            "measures": self.exp.measures,
        }

    def _claim_folder(self) -> None:
        ident = self.identity()
        path = self.out / "sweep.json"
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except ValueError:
                old = None
            if old is not None and old.get("identity") != ident:
                raise BadInput(
                    f"{str(self.out)!r} holds a different sweep (other grid, model, collection or "
                    "settings); use another --out"
                )
        atomic_write_text(
            path, json.dumps({"identity": ident, "model": self.exp.model_label}, indent=2) + "\n"
        )

    def _paths(self, cell: Cell) -> tuple[Path, Path]:
        rid = self.run_ids[cell.index]
        return self.cells_dir / f"{rid}.per_query.parquet", self.cells_dir / f"{rid}.summary.parquet"

    def done(self, cell: Cell) -> bool:
        pq, sm = self._paths(cell)
        return pq.is_file() and sm.is_file()

    def pending(self) -> list[Cell]:
        todo = [c for c in self.cells if not self.done(c)]

        def order(c: Cell) -> tuple[int, int]:
            first = self.compiled[c.index].first_layer
            return (-1 if first is None else first, c.index)

        return sorted(todo, key=order)

    # --- running
    def _decorate(self, cell: Cell, df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df.insert(1, "cell", cell.index)
        df.insert(2, "cell_interaction", cell.interaction)
        df.insert(3, "cell_layers", cell.layers)
        df.insert(4, "cell_heads", cell.heads)
        return df

    def run_cell(self, cell: Cell) -> RunResult:
        compiled = self.compiled[cell.index]
        result = self.exp.run(cell.spec, compiled=compiled, prefix=self.prefix)
        pq, sm = self._paths(cell)
        atomic_write_parquet(self._decorate(cell, result.per_query), pq)
        atomic_write_parquet(self._decorate(cell, result.summary), sm)  # written last: marks the cell done
        self.computed += 1
        return result

    def consolidate(self) -> pd.DataFrame:
        """Rewrite ``per_query`` and ``summary`` from the finished cells, in grid order (atomically)."""
        frames = {"per_query": [], "summary": []}
        for cell in self.cells:
            if self.done(cell):
                pq, sm = self._paths(cell)
                frames["per_query"].append(pd.read_parquet(pq))
                frames["summary"].append(pd.read_parquet(sm))
        meta = manifest(
            **run_meta(
                self.exp,
                "ablation-sweep",
                sweep=self.config.to_dict(),
                cells=len(self.cells),
                finished=len(frames["summary"]),
            )
        )
        out = {}
        for table, parts in frames.items():
            df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
            write_table(df, self.out, table, meta)
            out[table] = df
        return out["summary"]

    def run(self) -> pd.DataFrame:
        self.out.mkdir(parents=True, exist_ok=True)
        _clean_tmp(self.out)
        _clean_tmp(self.cells_dir)
        self._claim_folder()
        todo = self.pending()
        delay = float(os.environ.get(CELL_DELAY_ENV, "0") or 0)
        bar = pbar(len(self.cells), "sweep", self.progress)
        bar.update(len(self.cells) - len(todo))
        for cell in todo:
            bar.set_postfix_str(cell.label[:40])
            self.run_cell(cell)
            self.consolidate()
            bar.update(1)
            if delay:
                time.sleep(delay)
        bar.close()
        return self.consolidate()


def pivot(summary: pd.DataFrame, measure: str = "nDCG@10") -> pd.DataFrame:
    """Delta of ``measure`` as an interaction × layer-unit grid (one screen)."""
    part = summary[summary["measure"] == measure]
    if part.empty:
        return part
    grid = part.pivot_table(index="cell_interaction", columns="cell_layers", values="delta", sort=False)
    if "cell_heads" in part and part["cell_heads"].nunique() > 1:
        grid = part.pivot_table(
            index=["cell_interaction", "cell_heads"], columns="cell_layers", values="delta", sort=False
        )
    return grid


def against_bm25_line(summary: pd.DataFrame, measure: str, alpha: float = 0.05) -> str:
    """The full model and the cells against BM25, the candidates' own order (empty when a cell was stored
    without the BM25 columns)."""
    part = summary[summary["measure"] == measure]
    if part.empty or "bm25_mean" not in part or part["bm25_mean"].isna().any():
        return ""
    r = part.iloc[0]
    below = int(((part["delta_bm25"] < 0) & (part["p_bm25"] < alpha)).sum())
    p = r["baseline_p_bm25"]
    return (
        f"against BM25, the candidates' own order ({measure} {r['bm25_mean']:.4f}): the full model "
        f"{r['baseline_delta_bm25']:+.4f} (p {p:.2g}); {below} of {len(part)} cells significantly below BM25 "
        f"(paired t-test, p < {alpha:g})"
    )
