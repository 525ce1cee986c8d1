"""The runner: baseline cache, per-query comparison, the common results tables, sweep and search."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from test_ablation_support import write_tiny_beir

from ablations.data.collections import load_collection
from ablations.experiments.runner import (
    BM25_COLUMNS,
    PER_QUERY_COLUMNS,
    SUMMARY_COLUMNS,
    Experiment,
    Settings,
    add_bm25,
    baseline_scores,
    format_summary,
    lacks_bm25,
    stored_summary,
    write_results,
)
from ablations.experiments.search import Search, SearchConfig, Unit, merge_units
from ablations.experiments.sweep import Sweep, SweepConfig
from ablations.masking.masks import MaskSpec, Rule
from ablations.results import read_manifest, read_table
from probe.errors import BadInput
from probe.model import model_fingerprint


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MICE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def rs(tmp_path):
    return load_collection(str(write_tiny_beir(tmp_path / "tiny")))


@pytest.fixture
def exp(tiny_ce_factory, rs, cache):
    return Experiment(
        tiny_ce_factory(layers=3), rs, Settings(collection=rs.name, n_boot=500), model_label="tiny"
    )


def test_fingerprint_tracks_weights(tiny_ce_factory):
    a, b, c = tiny_ce_factory(seed=0), tiny_ce_factory(seed=0), tiny_ce_factory(seed=1)
    assert model_fingerprint(a) == model_fingerprint(b) != model_fingerprint(c)


def test_baseline_is_computed_once_and_cached(tiny_ce, rs, cache, monkeypatch):
    scores, cached = baseline_scores(tiny_ce, rs)
    assert not cached and scores.shape == (len(rs.candidates),)
    calls = []
    monkeypatch.setattr(
        type(tiny_ce), "score", lambda *a, **k: calls.append(1) or np.zeros(len(rs.candidates))
    )
    again, cached = baseline_scores(tiny_ce, rs)
    assert cached and not calls and np.array_equal(again, scores)
    _, cached = baseline_scores(tiny_ce, rs.subset(2), use_cache=True)  # other queries: another key
    assert not cached and calls


def test_run_compares_per_query(exp):
    res = exp.run(MaskSpec.remove("cls2doc"))
    pq, sm = res.per_query, res.summary
    assert list(pq.columns) == PER_QUERY_COLUMNS and list(sm.columns) == SUMMARY_COLUMNS
    assert len(pq) == len(exp.rs.queries) * len(exp.measures)
    assert np.allclose(pq["delta"], pq["value"] - pq["baseline_value"])
    nd = sm[sm["measure"] == "nDCG@10"].iloc[0]
    part = pq[pq["measure"] == "nDCG@10"]
    assert nd["delta"] == pytest.approx(part["delta"].mean())
    assert nd["wins"] + nd["ties"] + nd["losses"] == len(exp.rs.queries)
    assert json.loads(nd["spec"]) == MaskSpec.remove("cls2doc").to_dict()
    assert nd["layers"] == "0-2" and nd["first_layer"] == 0 and nd["model"] == "tiny"
    # the prefix path and the plain masked forward give the same run
    plain = exp.run(MaskSpec.remove("cls2doc"), prefix=False)
    assert np.abs(plain.scores - res.scores).max() < 1e-5
    # an empty mask is the baseline exactly
    empty = exp.run(MaskSpec())
    assert (empty.per_query["delta"] == 0).all() and (empty.summary["p"] == 1).all()


def test_run_id_is_deterministic_and_spec_sensitive(exp):
    a = exp.run_id(MaskSpec.remove("doc2query"))
    assert a == exp.run_id(MaskSpec.remove("doc2query"))
    assert a != exp.run_id(MaskSpec.remove("doc2query", layers="0"))


def test_equivalent_specs_share_a_run_id(exp):
    """Runs are keyed by the compiled mask, not by how the spec was written."""
    n, h = exp.ce.num_layers, exp.ce.num_heads
    a = exp.run_id(MaskSpec.remove("doc2query"))
    assert a == exp.run_id(MaskSpec.remove("doc2query", layers=f"0-{n + 90}"))  # clamped to the same layers
    assert a == exp.run_id(MaskSpec.remove("doc2query", heads=f"0-{h - 1}"))  # every head = all heads
    assert a == exp.run_id(MaskSpec([Rule("doc2query", "0"), Rule("doc2query", f"1-{n - 1}")]))
    assert a != exp.run_id(MaskSpec.remove("doc2query", heads="0"))


def test_results_tables_append_and_replace(exp, tmp_path):
    out = tmp_path / "out"
    r1, r2 = exp.run(MaskSpec.remove("cls2doc")), exp.run(MaskSpec.remove("doc2query", layers="1"))
    write_results([r1], out, {"kind": "test"})
    write_results([r2], out, {"kind": "test"})
    write_results([r1], out, {"kind": "test"})  # a rerun replaces its rows
    sm = read_table(out, "summary")
    assert sorted(sm["run_id"].unique()) == sorted({r1.run_id, r2.run_id})
    assert len(sm) == 2 * len(exp.measures)
    assert len(read_table(out, "per_query")) == 2 * len(exp.measures) * len(exp.rs.queries)
    meta = read_manifest(out, "summary")
    assert meta["git_revision"] and {r["run_id"] for r in meta["runs"]} == {r1.run_id, r2.run_id}
    text = format_summary(r1.summary)
    assert "nDCG@10" in text and "W/T/L" in text
    table, bm25 = text.split("\nagainst BM25")
    assert len(table.splitlines()) == 1 + len(exp.measures) and len(bm25.splitlines()) == 1 + len(
        exp.measures
    )
    # a summary written before the BM25 columns existed still prints, without that section
    old = r1.summary.drop(columns=BM25_COLUMNS)
    assert "against BM25" not in format_summary(old)
    assert len(format_summary(old).splitlines()) == 1 + len(exp.measures)


def test_run_against_the_first_stage(exp):
    """Every run carries the first stage's per-query values and the full and ablated model tested against
    them, computed here independently with ir_measures and scipy."""
    import ir_measures
    from scipy import stats

    res = exp.run(MaskSpec.remove("doc2query"))
    pq, sm = res.per_query, res.summary
    cand = exp.rs.candidates
    run = pd.DataFrame({"query_id": cand["query_id"], "doc_id": cand["doc_id"], "score": -cand["rank"] * 1.0})
    qrels = exp.rs.qrels
    for measure in exp.measures:
        want = {
            m.query_id: m.value
            for m in ir_measures.iter_calc([ir_measures.parse_measure(measure)], qrels, run)
        }
        part = pq[pq["measure"] == measure]
        assert np.allclose(part["bm25_value"], part["query_id"].map(want).fillna(0.0))
        row = sm[sm["measure"] == measure].iloc[0]
        assert row["bm25_mean"] == pytest.approx(part["bm25_value"].mean())
        assert row["delta_bm25"] == pytest.approx((part["value"] - part["bm25_value"]).mean())
        assert row["baseline_delta_bm25"] == pytest.approx(
            (part["baseline_value"] - part["bm25_value"]).mean()
        )
        d = part["value"] - part["bm25_value"]
        if d.std() > 0:
            assert row["p_bm25"] == pytest.approx(stats.ttest_rel(part["value"], part["bm25_value"]).pvalue)
    # the first stage does not depend on the mask: the full model's side is the same in every run
    other = exp.run(MaskSpec.remove("cls2doc")).summary
    assert np.allclose(other["bm25_mean"], sm["bm25_mean"])
    assert np.allclose(other["baseline_delta_bm25"], sm["baseline_delta_bm25"])
    assert "against BM25, the candidates' own order" in format_summary(sm)


def test_a_run_stored_before_the_bm25_columns_gets_them(exp, tmp_path):
    res, other = exp.run(MaskSpec.remove("doc2query")), exp.run(MaskSpec.remove("cls2doc"))
    old = [
        dataclasses.replace(
            r,
            per_query=r.per_query.drop(columns=["bm25_value"]),
            summary=r.summary.drop(columns=BM25_COLUMNS),
        )
        for r in (res, other)
    ]
    write_results(old, tmp_path, {"kind": "test"})
    stored = stored_summary(tmp_path, res.run_id)
    assert lacks_bm25(stored) and not lacks_bm25(res.summary)
    filled = add_bm25(tmp_path, res.run_id, exp)
    pd.testing.assert_frame_equal(filled[BM25_COLUMNS], res.summary[BM25_COLUMNS])
    # written back: this run's rows equal a fresh run's, the other run's are left without (NaN)
    pq, sm = read_table(tmp_path, "per_query"), read_table(tmp_path, "summary")
    mine = pq[pq["run_id"] == res.run_id].reset_index(drop=True)
    np.testing.assert_allclose(mine["bm25_value"], res.per_query["bm25_value"])
    assert pq.loc[pq["run_id"] == other.run_id, "bm25_value"].isna().all()
    assert lacks_bm25(sm[sm["run_id"] == other.run_id]) and not lacks_bm25(sm[sm["run_id"] == res.run_id])
    assert read_manifest(tmp_path, "summary")["bm25_added"] == [res.run_id]
    (tmp_path / "per_query.parquet").unlink()  # without its per-query rows: nothing to add
    assert add_bm25(tmp_path, other.run_id, exp) is None


def test_sweep_grid_and_prefix_equivalence(exp, tmp_path):
    cfg = SweepConfig(interactions=["doc2query", "cls2doc"], layer_units=["each"])
    cells, _ = cfg.cells(3, 4)
    assert [(c.interaction, c.layers) for c in cells] == [
        ("doc2query", "0"),
        ("doc2query", "1"),
        ("doc2query", "2"),
        ("cls2doc", "0"),
        ("cls2doc", "1"),
        ("cls2doc", "2"),
    ]
    assert [c.layers for c in SweepConfig(["doc2query"], mode="from").cells(3, 4)[0]] == ["0-2", "1-2", "2"]
    assert [c.layers for c in SweepConfig(["doc2query"], mode="upto").cells(3, 4)[0]] == ["0", "0-1", "0-2"]
    heads = SweepConfig(["doc2query"], ["0-1"], head_groups=["0-1", "2-3"]).cells(3, 4)[0]
    assert [(c.layers, c.heads) for c in heads] == [("0-1", "0-1"), ("0-1", "2-3")]
    with pytest.raises(BadInput, match="heads"):
        SweepConfig(["doc2query"], head_groups=["4"]).cells(3, 4)
    a = Sweep(exp, cfg, tmp_path / "a", prefix=True).run()
    b = Sweep(exp, cfg, tmp_path / "b", prefix=False).run()
    cols = ["cell", "measure", "mean", "delta"]
    pd.testing.assert_frame_equal(a[cols], b[cols], atol=1e-6)
    assert list(a["cell"].unique()) == list(range(6))
    with pytest.raises(BadInput, match="different sweep"):
        Sweep(exp, SweepConfig(interactions=["query2doc"]), tmp_path / "a").run()


def test_search_keeps_the_drop_within_tolerance(exp, tmp_path):
    cfg = SearchConfig(interactions=["query2doc", "doc2query", "cls2doc"], tolerance=0.0)
    search = Search(exp, cfg, tmp_path / "s")
    removed, surviving = search.run()
    assert set(removed) | set(surviving) == set(search.units) and not set(removed) & set(surviving)
    doc = json.loads((tmp_path / "s" / "search.json").read_text())
    spec = MaskSpec.from_dict(doc["removed"])
    assert spec == merge_units(removed).for_model(exp.ce.num_layers, exp.ce.num_heads)
    if removed:
        final = exp.run(spec).summary.set_index("measure").loc["nDCG@10"]
        assert final["baseline_mean"] - final["mean"] <= 1e-9  # tolerance 0: no drop at all
    steps = read_table(tmp_path / "s", "steps")
    assert steps["added"].sum() == len(removed)
    assert steps.loc[steps["added"], "acceptable"].all()
    # rerun: every evaluation is reused from disk
    again = Search(exp, cfg, tmp_path / "s")
    assert again.run() == (removed, surviving) and again.evaluations == 0


def test_merge_units():
    spec = merge_units(
        [Unit("doc2query", "0"), Unit("doc2query", "1"), Unit("cls2doc", "3"), Unit("doc2query", "4")]
    )
    assert spec.rules == [Rule("doc2query", "0-1,4"), Rule("cls2doc", "3")]
