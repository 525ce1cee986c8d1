"""probe.rollout: attention rollout and attention flow (Abnar & Zuidema 2020) from CLS to the input roles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.capture import pattern_name, rollout_name, run_with_cache
from probe.roles import FLOW_ROLES
from probe.rollout import (
    ROLLOUT_COLUMNS,
    attention_flow,
    cls_role_shares,
    residual_attention,
    role_shares,
    rollout,
    shares_table,
    summarise_shares,
)

ROLES = np.array([0, 1, 1, 2, 3, 3, 3, 4])  # cls q q sep1 d d d sep2


def random_patterns(rng, layers, n, heads=2):
    a = rng.random((layers, heads, n, n)) ** 3
    return a / a.sum(-1, keepdims=True)


def test_identity_attention_keeps_cls_on_itself():
    a_hat = residual_attention([np.eye(8)] * 3)
    np.testing.assert_allclose(rollout(a_hat)[-1], np.eye(8))
    flow = attention_flow(a_hat)
    np.testing.assert_allclose(role_shares(flow, ROLES), [[1, 0, 0, 0, 0]] * 3)


def test_one_uniform_layer_has_the_closed_form():
    n = len(ROLES)
    a_hat = residual_attention([np.full((1, n, n), 1 / n)])
    cls_row = rollout(a_hat)[0, 0]
    expect = np.full(n, 0.5 / n)
    expect[0] += 0.5
    np.testing.assert_allclose(cls_row, expect)
    np.testing.assert_allclose(role_shares(cls_row, ROLES), [0.5 + 0.5 / n, 1 / n, 0.5 / n, 1.5 / n, 0.5 / n])
    # with one layer every path is a single edge: the normalised max-flow is the rollout row
    np.testing.assert_allclose(attention_flow(a_hat)[0], expect, atol=2e-6)


def test_rollout_and_flow_rows_are_distributions():
    rng = np.random.default_rng(0)
    a_hat = residual_attention(random_patterns(rng, 4, len(ROLES)))
    rolled = rollout(a_hat)
    np.testing.assert_allclose(rolled.sum(-1), 1.0, atol=1e-12)
    assert (rolled >= 0).all()
    flow = attention_flow(a_hat)
    np.testing.assert_allclose(flow.sum(-1), 1.0, atol=1e-9)
    np.testing.assert_allclose(role_shares(flow, ROLES).sum(-1), 1.0, atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 3), st.integers(3, 7))
def test_scipy_max_flow_matches_networkx(seed, layers, n):
    rng = np.random.default_rng(seed)
    a_hat = residual_attention(random_patterns(rng, layers, n))
    fast = attention_flow(a_hat, method="scipy")
    exact = attention_flow(a_hat, method="networkx")
    np.testing.assert_allclose(fast, exact, atol=n * 2e-6)  # capacities are rounded to 1e-6


def test_unknown_flow_method_is_refused():
    with pytest.raises(ValueError, match="unknown max-flow method 'magic'"):
        attention_flow(residual_attention([np.eye(3)]), method="magic")


def test_rollout_in_the_hooks_equals_rollout_from_the_patterns(tiny_ce_factory, pairs):
    ce = tiny_ce_factory(layers=3)
    _, cache = run_with_cache(ce, pairs, ("pattern", "rollout"), batch_size=2)
    for i, roles in enumerate(cache.roles):
        pats = [cache[pattern_name(la)][i] for la in range(3)]
        offline = cls_role_shares(pats, roles, flow=True)
        on_the_fly = np.stack([cache[rollout_name(la)][i].numpy() for la in range(3)])
        np.testing.assert_allclose(on_the_fly, offline["rollout"], atol=1e-6)
        np.testing.assert_allclose(on_the_fly.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(offline["flow"].sum(-1), 1.0, atol=1e-9)
        assert offline["flow"].shape == (3, 5)


def test_shares_tables():
    shares = {"rollout": np.full((2, 3, 5), 0.2), "flow": np.full((1, 3, 5), 0.2)}
    shares["rollout"][1, 2] = [0.1, 0.2, 0.0, 0.6, 0.1]
    table = shares_table(shares, query_ids=["q1", "q2"], doc_ids=["d1", "d2"], collection="toy")
    assert list(table.columns) == ROLLOUT_COLUMNS
    assert len(table) == (2 + 1) * 3 * 5
    row = table[
        (table.query_id == "q2") & (table.layer == 2) & (table.method == "rollout") & (table.role == "doc")
    ]
    assert row["value"].item() == pytest.approx(0.6)
    wide = summarise_shares(table)
    assert list(wide.columns) == ["collection", "method", "layer", *FLOW_ROLES]
    got = wide[(wide.method == "rollout") & (wide.layer == 2)]["doc"].item()
    assert got == pytest.approx((0.2 + 0.6) / 2)
