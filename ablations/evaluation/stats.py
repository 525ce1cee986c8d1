"""Paired comparison of an ablated run with the unablated model, per query.

For one measure, ``values[i]`` (ablated) and ``baseline[i]`` (full model) are the same query's scores.
:func:`paired_stats` reports the mean delta (ablated − baseline), a paired t-test (``scipy.stats.ttest_rel``),
a seeded percentile bootstrap confidence interval of the mean delta (queries resampled with
replacement) and win / tie / loss counts (a query whose |delta| ≤ ``tie_tol`` is a tie).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

DEFAULT_BOOTSTRAP = 10_000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_TIE_TOL = 1e-6


@dataclass(frozen=True)
class PairedStats:
    n: int
    mean: float
    baseline_mean: float
    delta: float
    t: float
    p: float
    ci_low: float
    ci_high: float
    wins: int
    ties: int
    losses: int

    def as_dict(self) -> dict:
        return asdict(self)

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p < alpha


def bootstrap_ci(
    deltas: np.ndarray,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``deltas`` (seeded, reproducible); ``n_boot=0``: none
    (NaN, NaN), for callers that want the t-test alone."""
    deltas = np.asarray(deltas, dtype=float)
    if deltas.size == 0 or n_boot < 1:
        return math.nan, math.nan
    if np.all(deltas == deltas[0]):
        return float(deltas[0]), float(deltas[0])
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // deltas.size)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        means[start:stop] = deltas[rng.integers(0, deltas.size, (stop - start, deltas.size))].mean(1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_stats(
    values,
    baseline,
    *,
    tie_tol: float = DEFAULT_TIE_TOL,
    n_boot: int = DEFAULT_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> PairedStats:
    values = np.asarray(values, dtype=float)
    baseline = np.asarray(baseline, dtype=float)
    if values.shape != baseline.shape:
        raise ValueError(f"paired arrays differ in shape: {values.shape} vs {baseline.shape}")
    n = int(values.size)
    deltas = values - baseline
    if n == 0:
        return PairedStats(0, *([math.nan] * 7), 0, 0, 0)
    if n < 2 or np.allclose(deltas, deltas[0], rtol=0, atol=1e-12):
        # No variance: the t statistic is undefined; zero shift means "no evidence of a difference".
        d0 = float(deltas.mean())
        t, p = (
            (0.0, 1.0)
            if abs(d0) <= 1e-12
            else ((math.copysign(math.inf, d0), 0.0) if n >= 2 else (math.nan, math.nan))
        )
    else:
        res = stats.ttest_rel(values, baseline)
        t, p = float(res.statistic), float(res.pvalue)
    lo, hi = bootstrap_ci(deltas, n_boot=n_boot, confidence=confidence, seed=seed)
    return PairedStats(
        n=n,
        mean=float(values.mean()),
        baseline_mean=float(baseline.mean()),
        delta=float(deltas.mean()),
        t=t,
        p=p,
        ci_low=lo,
        ci_high=hi,
        wins=int((deltas > tie_tol).sum()),
        ties=int((np.abs(deltas) <= tie_tol).sum()),
        losses=int((deltas < -tie_tol).sum()),
    )


def paired_table(per_query, against, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0):
    """Every run of a tidy per-query table (``collection, run, query_id, measure, value``) against each run
    named in ``against`` on the same queries: one row per collection × measure × run × baseline run with
    :class:`PairedStats`' fields (``mean`` the run's, ``baseline_mean`` the baseline's). A baseline is not
    tested again against an earlier one (``against=["bm25", "teacher"]``: teacher vs BM25, not BM25 vs
    teacher)."""
    import pandas as pd

    rows = []
    for (coll, measure), part in per_query.groupby(["collection", "measure"], sort=False):
        wide = part.pivot_table(index="query_id", columns="run", values="value", sort=False)
        for i, base in enumerate(against):
            if base not in wide.columns:
                continue
            for run in wide.columns:
                if run == base or run in against[:i]:  # an earlier baseline was already tested against this
                    continue
                both = wide[[run, base]].dropna()
                st = paired_stats(both[run].to_numpy(), both[base].to_numpy(), n_boot=n_boot, seed=seed)
                key = {"collection": coll, "measure": measure, "run": run, "against": base}
                rows.append({**key, **st.as_dict()})
    columns = ["collection", "measure", "run", "against", *PairedStats.__dataclass_fields__]
    return pd.DataFrame(rows, columns=columns)
