"""Paired statistics of ablated vs full model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ablations.evaluation.stats import bootstrap_ci, paired_stats


def test_paired_stats_against_scipy():
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 1, 40)
    abl = base - 0.05 + rng.normal(0, 0.05, 40)
    s = paired_stats(abl, base, seed=1)
    ref = stats.ttest_rel(abl, base)
    assert s.t == pytest.approx(ref.statistic) and s.p == pytest.approx(ref.pvalue)
    assert s.delta == pytest.approx((abl - base).mean())
    assert s.ci_low < s.delta < s.ci_high
    assert s.wins + s.ties + s.losses == 40 and s.losses > s.wins
    assert s.significant()
    assert paired_stats(abl, base, seed=1) == s  # seeded: reproducible
    assert paired_stats(abl, base, seed=2).ci_low != s.ci_low


def test_identical_runs_are_all_ties_with_p_one():
    x = np.array([0.1, 0.5, 0.9])
    s = paired_stats(x, x)
    assert (s.delta, s.t, s.p, s.ci_low, s.ci_high) == (0.0, 0.0, 1.0, 0.0, 0.0)
    assert (s.wins, s.ties, s.losses) == (0, 3, 0)


def test_constant_shift_and_tie_tolerance():
    base = np.array([0.2, 0.4, 0.6])
    s = paired_stats(base + 0.1, base)
    assert s.p == 0.0 and math.isinf(s.t) and s.ci_low == pytest.approx(0.1)
    s = paired_stats(base + np.array([0.001, -0.001, 0.2]), base, tie_tol=0.01)
    assert (s.wins, s.ties, s.losses) == (1, 2, 0)


def test_bootstrap_ci_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.1, 1, 20), rng.normal(0.1, 1, 2000)
    lo_s, hi_s = bootstrap_ci(small, n_boot=2000)
    lo_l, hi_l = bootstrap_ci(large, n_boot=2000)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < hi_s - lo_s


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        paired_stats([1, 2], [1])
