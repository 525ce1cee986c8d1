"""Greedy search for the minimal interaction set: remove as much as possible while nDCG stays within
tolerance.

Library behind ``python -m ablations.search`` [--interactions query2doc doc2query cls2query cls2doc]
[--layer-units each]
                               [--tolerance 0.01] [--alpha 0.05] [--strategy ordered|best] [--out DIR]

Candidates are *units* ``(interaction, layers)``: every interaction × layer unit (as in the sweep). A set
of removed units is acceptable when the drop of ``--measure`` (default nDCG@10) against the full model is
at most ``--tolerance`` (absolute, default 0.01 = 1 point) and, with ``--alpha``, the paired t-test does
not find the difference significant (p ≥ alpha).

- ``ordered`` (default, 2n evaluations): evaluate each unit alone, then try adding units from the least to
  the most harmful, keeping each one whose addition leaves the set acceptable. A unit that is not
  acceptable on its own is not tried.
- ``best`` (up to n²/2 evaluations): at each step add the unit whose addition hurts least, while acceptable.

Output in ``<out>``: ``search.json`` (the removed set as a MaskSpec and the surviving units),
``steps.parquet`` (every evaluation: ``acceptable`` = within tolerance, ``added`` = the unit joined
the removed set), and the evaluated runs in the common format
(``per_query`` / ``summary``, via the sweep's resumable cells: a rerun reuses finished evaluations).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ablations.evaluation.measures import parse_measures
from ablations.experiments.runner import Experiment, run_meta
from ablations.experiments.sweep import DEFAULT_INTERACTIONS, Cell, Sweep, SweepConfig
from ablations.masking.interactions import SEARCH_STRATEGIES
from ablations.masking.masks import MaskSpec, Rule, format_ranges, parse_ranges
from ablations.results import atomic_write_text, manifest, write_table
from probe.errors import BadInput

STRATEGIES = SEARCH_STRATEGIES


@dataclass(frozen=True)
class Unit:
    interaction: str
    layers: str

    @property
    def label(self) -> str:
        return f"{self.interaction}[{self.layers}]"


@dataclass
class SearchConfig:
    interactions: list[str] = field(default_factory=lambda: list(DEFAULT_INTERACTIONS))
    layer_units: list[str] = field(default_factory=lambda: ["each"])
    tolerance: float = 0.01
    alpha: float | None = None
    measure: str = "nDCG@10"
    strategy: str = "ordered"
    base: MaskSpec = field(default_factory=MaskSpec)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise BadInput(f"--strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if not self.tolerance >= 0:
            raise BadInput(f"--tolerance {self.tolerance} must be >= 0 (an absolute drop, e.g. 0.01)")
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise BadInput(f"--alpha {self.alpha} must be in (0, 1)")
        self.measure = str(parse_measures([self.measure])[0])
        SweepConfig(
            self.interactions, self.layer_units, "single", [], self.base
        )  # validates names and ranges


def merge_units(units: list[Unit]) -> MaskSpec:
    """Removed units as a compact spec: one rule per interaction with its layers merged (``0-2,5``)."""
    by_inter: dict[str, set[int]] = {}
    for u in units:
        ranges = parse_ranges(u.layers, "layers") or ()
        by_inter.setdefault(u.interaction, set()).update(i for s, e in ranges for i in range(s, e + 1))
    return MaskSpec([Rule(i, format_ranges(ls)) for i, ls in by_inter.items()])


class Search:
    def __init__(self, exp: Experiment, config: SearchConfig, out_dir: Path, *, progress: bool = False):
        self.exp, self.config, self.out = exp, config, Path(out_dir)
        grid = SweepConfig(config.interactions, config.layer_units, "single", [], MaskSpec())
        cells, self.notices = grid.cells(exp.ce.num_layers, exp.ce.num_heads)
        self.units = [Unit(c.interaction, c.layers) for c in cells]
        self.progress = progress
        self.steps: list[dict] = []
        self.evaluations = 0
        self._cache: dict[str, pd.Series] = {}
        # Evaluations are cells of an (open-ended) sweep in the search folder: resumable, common format.
        self._sweep = Sweep(
            exp,
            SweepConfig(config.interactions, config.layer_units, "single", [], config.base),
            self.out,
            progress=False,
        )
        self._sweep.cells, self._sweep.compiled, self._sweep.run_ids = [], {}, {}

    def spec_for(self, units: list[Unit]) -> MaskSpec:
        return self.config.base + merge_units(units)

    def evaluate(self, units: list[Unit]) -> pd.Series:
        """Summary row of ``--measure`` for the base + ``units`` (computed once; reused from disk on
        rerun)."""
        spec = self.spec_for(units)
        key = spec.to_json()
        if key in self._cache:
            return self._cache[key]
        sw = self._sweep
        cell = Cell(len(sw.cells), "+".join(u.label for u in units) or "none", "", "all", spec)
        sw.cells.append(cell)
        sw.compiled[cell.index] = self.exp.compile(spec)
        sw.run_ids[cell.index] = self.exp.run_id(spec)
        if not sw.done(cell):
            sw.run_cell(cell)
            self.evaluations += 1
        summary = pd.read_parquet(sw._paths(cell)[1])
        row = summary[summary["measure"] == self.config.measure].iloc[0]
        self._cache[key] = row
        return row

    @property
    def distinct_masks(self) -> int:
        """Masks evaluated (a step that repeats an earlier step's mask reuses its result)."""
        return len(self._cache)

    def acceptable(self, row: pd.Series) -> bool:
        drop = row["baseline_mean"] - row["mean"]
        ok = drop <= self.config.tolerance + 1e-12
        if self.config.alpha is not None:
            ok = ok and not (row["p"] < self.config.alpha)
        return bool(ok)

    def _record(self, phase: str, removed: list[Unit], unit: Unit, row: pd.Series, added: bool) -> None:
        self.steps.append(
            {
                "step": len(self.steps),
                "phase": phase,
                "unit": unit.label,
                "interaction": unit.interaction,
                "layers": unit.layers,
                "removed_before": len(removed),
                "spec": self.spec_for([*removed, unit]).to_json(),
                "measure": self.config.measure,
                "mean": row["mean"],
                "baseline_mean": row["baseline_mean"],
                "delta": row["delta"],
                "p": row["p"],
                "acceptable": self.acceptable(row),
                "added": added,
            }
        )

    def run(self) -> tuple[list[Unit], list[Unit]]:
        self.out.mkdir(parents=True, exist_ok=True)
        self._sweep._claim_folder()
        removed: list[Unit] = []
        if self.config.strategy == "ordered":
            alone = {}
            # Singletons by first layer, so the prefix cache moves forward only.
            for unit in sorted(
                self.units, key=lambda u: (parse_ranges(u.layers, "layers")[0][0], self.units.index(u))
            ):
                alone[unit] = self.evaluate([unit])
            for unit in self.units:
                self._record("alone", [], unit, alone[unit], False)
            order = sorted(self.units, key=lambda u: (-alone[u]["delta"], self.units.index(u)))
            for unit in order:
                if not self.acceptable(alone[unit]):
                    continue
                if not removed:
                    removed.append(unit)  # acceptable alone: the first addition is the singleton already seen
                    self._record("add", [], unit, alone[unit], True)
                    continue
                row = self.evaluate([*removed, unit])
                ok = self.acceptable(row)
                self._record("add", removed, unit, row, ok)
                if ok:
                    removed.append(unit)
        else:
            remaining = list(self.units)
            while remaining:
                rows = {u: self.evaluate([*removed, u]) for u in remaining}
                for u, r in rows.items():
                    self._record(f"step{len(removed)}", removed, u, r, False)
                ok = [u for u in remaining if self.acceptable(rows[u])]
                if not ok:
                    break
                best = max(ok, key=lambda u: (rows[u]["delta"], -remaining.index(u)))
                self.steps[-len(remaining) + remaining.index(best)]["added"] = True
                removed.append(best)
                remaining.remove(best)
        surviving = [u for u in self.units if u not in removed]
        self.write(removed, surviving)
        return removed, surviving

    def write(self, removed: list[Unit], surviving: list[Unit]) -> None:
        spec = self.spec_for(removed).for_model(self.exp.ce.num_layers, self.exp.ce.num_heads)
        final = self.evaluate(removed) if removed else None
        doc = {
            "removed": spec.to_dict(),
            "removed_label": spec.label,
            "surviving": [{"interaction": u.interaction, "layers": u.layers} for u in surviving],
            "surviving_spec": merge_units(surviving)
            .for_model(self.exp.ce.num_layers, self.exp.ce.num_heads)
            .to_dict(),
            "measure": self.config.measure,
            "tolerance": self.config.tolerance,
            "alpha": self.config.alpha,
            "strategy": self.config.strategy,
            "final": None
            if final is None
            else {k: float(final[k]) for k in ("mean", "baseline_mean", "delta", "p", "ci_low", "ci_high")},
        }
        atomic_write_text(self.out / "search.json", json.dumps(doc, indent=2) + "\n")
        meta = manifest(**run_meta(self.exp, "ablation-search", search={**doc}))
        write_table(pd.DataFrame(self.steps), self.out, "steps", meta)
        self._sweep.consolidate()
