"""Measures as values and per-query evaluation with ir_measures.

A measure is named by its ir_measures string (``nDCG@10``, ``RR(rel=2)@10``, ``R@100``) and parsed once
(:func:`parse_measures`); :func:`per_query` gives the tidy ``query_id, measure, value`` table every result
is made of, :func:`evaluate_runs` the same for several runs on one rerank set, :func:`aggregate` their means.
"""

from __future__ import annotations

import ir_measures
import pandas as pd

from ablations.data.collections import RerankSet
from probe.errors import BadInput


def parse_measures(names) -> list:
    out = []
    for name in names:
        try:
            out.append(ir_measures.parse_measure(name))
        except Exception:
            raise BadInput(
                f"unknown measure {name!r}; use ir_measures names such as nDCG@10, RR@10, R@100"
            ) from None
    return out


def per_query(run: pd.DataFrame, qrels: pd.DataFrame, measures) -> pd.DataFrame:
    """Tidy table ``query_id, measure, value`` (every judged query, 0 for a query the run misses)."""
    measures = parse_measures(measures)
    rows = [(m.query_id, str(m.measure), float(m.value)) for m in ir_measures.iter_calc(measures, qrels, run)]
    df = pd.DataFrame(rows, columns=["query_id", "measure", "value"])
    # ir_measures skips queries absent from the run; they count as 0 for every measure.
    judged = qrels["query_id"].unique()
    full = pd.MultiIndex.from_product([judged, [str(m) for m in measures]], names=["query_id", "measure"])
    return df.set_index(["query_id", "measure"]).reindex(full, fill_value=0.0).reset_index()


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean per run × measure (wide: one row per run, one column per measure)."""
    keys = [c for c in ("collection", "run") if c in table.columns]
    wide = table.groupby([*keys, "measure"], sort=False)["value"].mean().unstack("measure")
    return wide[list(dict.fromkeys(table["measure"]))].reset_index()


def evaluate_runs(runs: dict[str, pd.DataFrame], rs: RerankSet) -> pd.DataFrame:
    """Per-query metrics for several runs on one rerank set, tidy: collection, run, query_id, measure,
    value."""
    frames = []
    for name, run in runs.items():
        df = per_query(run, rs.qrels, rs.measures)
        df.insert(0, "run", name)
        df.insert(0, "collection", rs.name)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)
