"""probe.flows: role masks, role→role flows and their tidy tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.capture import flow_name, run_with_cache
from probe.flows import (
    FLOW_COLUMNS,
    aggregate_flows,
    flow_matrix,
    flow_table,
    per_query_flows,
    role_flows,
    role_onehot,
)
from probe.roles import FLOW_ROLES, Role

WORDS = ["paris", "capital", "france", "vaccine", "immune", "the", "of", "a", "market", "fever", "cough", "x"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(WORDS), min_size=1, max_size=6),
            st.lists(st.sampled_from(WORDS), min_size=1, max_size=40),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_role_masks_cover_every_real_token_exactly_once(tiny_ce, texts):
    batch = tiny_ce.encode([(" ".join(q), " ".join(d)) for q, d in texts])
    onehot = role_onehot(batch.roles)
    assert torch.equal(
        onehot.sum(-1), batch.attention_mask.float()
    )  # one role per real token, none on padding
    assert torch.equal(onehot[:, :, int(Role.CLS)].sum(1), torch.ones(len(texts)))
    assert torch.equal(onehot[:, :, int(Role.SEP1)].sum(1), torch.ones(len(texts)))
    assert torch.equal(onehot[:, :, int(Role.SEP2)].sum(1), torch.ones(len(texts)))
    assert bool((onehot[:, :, int(Role.QUERY)].sum(1) >= 1).all())
    assert bool((onehot[:, :, int(Role.DOC)].sum(1) >= 1).all())


def naive_flows(pattern: np.ndarray, roles: np.ndarray) -> np.ndarray:
    h = pattern.shape[0]
    out = np.zeros((h, 5, 5))
    for head in range(h):
        for s in range(5):
            src = np.nonzero(roles == s)[0]
            for t in range(5):
                tgt = np.nonzero(roles == t)[0]
                out[head, s, t] = np.mean([pattern[head, i, tgt].sum() for i in src]) if len(src) else 0.0
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 5), st.integers(0, 6))
def test_role_flows_match_a_per_token_loop(seed, n_query, n_pad):
    rng = np.random.default_rng(seed)
    n_doc = int(rng.integers(1, 8))
    roles = np.array([0] + [1] * n_query + [2] + [3] * n_doc + [4] + [5] * n_pad)
    n = len(roles)
    scores = rng.normal(size=(3, n, n))
    scores[..., roles == 5] = -np.inf  # padding keys are masked as in the model
    pattern = np.exp(scores - scores.max(-1, keepdims=True))
    pattern /= pattern.sum(-1, keepdims=True)
    got = role_flows(
        torch.tensor(pattern).unsqueeze(0), role_onehot(torch.tensor(roles).unsqueeze(0), torch.float64)
    )
    np.testing.assert_allclose(got[0].numpy(), naive_flows(pattern, roles), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.sum(-1).numpy(), 1.0, rtol=1e-12)


def test_flows_per_source_role_sum_to_one_on_a_model(tiny_ce_factory, pairs):
    ce = tiny_ce_factory(layers=3, heads=4)
    _, cache = run_with_cache(ce, pairs, ("flows",), batch_size=2)
    for layer in range(3):
        flows = cache[flow_name(layer)]
        assert flows.shape == (len(pairs), 4, 5, 5)
        assert bool((flows >= 0).all())
        torch.testing.assert_close(flows.sum(-1), torch.ones(len(pairs), 4, 5), rtol=0, atol=1e-5)


def small_table(tiny_ce, pairs):
    _, cache = run_with_cache(tiny_ce, pairs, ("flows",))
    qids = [f"q{i // 2}" for i in range(len(pairs))]  # q0: 2 pairs, q1: 2 pairs, q2: 1 pair
    dids = [f"d{i}" for i in range(len(pairs))]
    flows = {la: cache[flow_name(la)] for la in cache.layers}
    return flow_table(flows, query_ids=qids, doc_ids=dids, heads=cache.heads, collection="toy"), flows


def test_flow_table_is_tidy_and_complete(tiny_ce, pairs):
    table, flows = small_table(tiny_ce, pairs)
    assert list(table.columns) == FLOW_COLUMNS
    assert len(table) == len(pairs) * 2 * 4 * 5 * 6  # pairs × layers × heads × sources × (5 targets + sep)
    assert not table["value"].isna().any()
    real = table[table["target"] != "sep"]
    sums = real.groupby(["query_id", "doc_id", "layer", "head", "source"])["value"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)
    wide = table.set_index(["doc_id", "layer", "head", "source", "target"])["value"].unstack("target")
    np.testing.assert_allclose(wide["sep"], wide["sep1"] + wide["sep2"], rtol=1e-12)
    row = table[
        (table.doc_id == "d3")
        & (table.layer == 1)
        & (table["head"] == 2)
        & (table.source == "doc")
        & (table.target == "query")
    ]
    assert row["query_id"].item() == "q1"
    assert row["value"].item() == pytest.approx(float(flows[1][3, 2, int(Role.DOC), int(Role.QUERY)]))


def test_aggregates_match_hand_computed_means(tiny_ce, pairs):
    table, flows = small_table(tiny_ce, pairs)
    agg = aggregate_flows(table)
    row = agg[(agg.layer == 0) & (agg["head"] == 1) & (agg.source == "query") & (agg.target == "doc")].iloc[0]
    values = flows[0][:, 1, int(Role.QUERY), int(Role.DOC)].double().numpy()
    assert row["count"] == 5 and row["queries"] == 3
    assert row["mean"] == pytest.approx(values.mean())
    assert row["std"] == pytest.approx(values.std(ddof=1))
    per_query = [values[:2].mean(), values[2:4].mean(), values[4]]
    assert row["query_mean"] == pytest.approx(np.mean(per_query))  # each query weighted once
    assert row["query_std"] == pytest.approx(np.std(per_query, ddof=1))
    pq = per_query_flows(table)
    assert pq[
        (pq.query_id == "q2")
        & (pq.layer == 0)
        & (pq["head"] == 1)
        & (pq.source == "query")
        & (pq.target == "doc")
    ]["value"].item() == pytest.approx(values[4])
    over_heads = aggregate_flows(table, keys=("layer", "source", "target"))
    r = over_heads[
        (over_heads.layer == 0) & (over_heads.source == "query") & (over_heads.target == "doc")
    ].iloc[0]
    assert r["count"] == 5 * 4
    assert r["mean"] == pytest.approx(flows[0][:, :, int(Role.QUERY), int(Role.DOC)].double().mean().item())


def test_flow_matrix_is_source_by_target(tiny_ce, pairs):
    table, flows = small_table(tiny_ce, pairs)
    mat = flow_matrix(table, layer=1)
    assert list(mat.index) == list(FLOW_ROLES) and list(mat.columns) == [*FLOW_ROLES, "sep"]
    np.testing.assert_allclose(mat[list(FLOW_ROLES)].sum(axis=1), 1.0, atol=1e-5)
    assert mat.loc["cls", "doc"] == pytest.approx(flows[1][:, :, 0, int(Role.DOC)].double().mean().item())


def test_flow_table_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected"):
        flow_table({0: np.zeros((2, 3, 5, 5))}, query_ids=["a"], doc_ids=["b"], heads=[0, 1, 2])
    empty = flow_table({}, query_ids=[], doc_ids=[], heads=[])
    assert list(empty.columns) == FLOW_COLUMNS and isinstance(empty, pd.DataFrame)
