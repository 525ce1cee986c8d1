"""The explorer's four views under streamlit's AppTest, on a tiny BERT and small real result tables.

Every test opens ``app/main.py`` the way a browser would (URL query parameters preset the sidebar), changes
widgets and checks that the outputs change as the toolkit's own functions say they should, and that bad
input gives a readable message, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from test_app_support import APP, build_demo

from ablations.data.collections import load_collection
from ablations.masking.masked import MaskedCrossEncoder
from ablations.masking.masks import MaskSpec, Rule
from ablations.results import manifest, read_table, write_table
from probe.capture import run_with_cache
from probe.flows import aggregate_flows
from probe.model import CrossEncoder

TIMEOUT = 180


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tokenizer):
    return build_demo(tmp_path_factory.mktemp("app-demo"), tokenizer)


@pytest.fixture(scope="module")
def ce(demo):
    return CrossEncoder.from_pretrained(demo.model, max_length=64)


def open_app(
    demo, view: str, *, model=None, collection=None, results=None, state: dict | None = None
) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update(
        view=view,
        model=str(model or demo.model),
        collection=str(collection or demo.beir),
        results=str(results or demo.results),
    )
    for key, value in (state or {}).items():
        at.session_state[key] = value
    return at.run()


def no_trouble(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def metric(at: AppTest, label: str) -> float:
    found = [m for m in at.metric if m.label == label]
    assert found, f"no metric {label!r}; metrics: {[m.label for m in at.metric]}"
    return float(found[0].value)


def frame(at: AppTest, column: str) -> pd.DataFrame:
    """The first read-only table (not a data editor) with ``column``."""
    found = [d.value for d in at.dataframe if d.editing_mode == "read_only" and column in d.value.columns]
    assert found, f"no table with column {column!r}"
    return found[0]


def first_pair(demo) -> tuple[str, str]:
    rs = load_collection(str(demo.beir))
    qid = rs.query_ids[0]
    top = rs.candidates[rs.candidates["query_id"] == qid].sort_values("rank")["doc_id"].iloc[0]
    return rs.queries[qid], rs.docs[top]


# ------------------------------------------------------------------------------------------- pair
def heatmap_cells(at) -> pd.DataFrame:
    """The cells (row, col, weight, tokens) the token × token attention heatmap was given."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    chart = next(c for c in at.get("vega_lite_chart") if "attending token" in c.proto.spec)
    frames = [convert_arrow_bytes_to_pandas_df(d.data.data) for d in chart.proto.datasets]
    (cells,) = [f for f in frames if "weight" in f.columns]  # the other datasets: role boundary lines
    return cells


def test_pair_view_score_attention_and_attributions(demo, ce):
    at = open_app(demo, "pair")
    no_trouble(at)
    query, doc = first_pair(demo)
    assert at.text_area(key="pair_query_input").value == query
    assert at.text_area(key="pair_doc_input").value == doc
    assert metric(at, "Score (full model)") == pytest.approx(float(ce.score([(query, doc)])[0]), abs=1e-4)
    heatmaps = [c for c in at.get("vega_lite_chart") if "attending token" in c.proto.spec]
    assert heatmaps, "the interactive attention heatmap is drawn"
    spec = json.loads(heatmaps[0].proto.spec)
    assert any(p.get("bind") == "scales" for p in spec.get("params", [])), "scroll zooms, drag pans"

    _, cache = run_with_cache(ce, [(query, doc)], ("pattern",), layers="0-2")
    table = frame(at, "attention_from_source")
    assert table["token"].iloc[0] == "[CLS]" and table["role"].iloc[0] == "cls"
    assert list(table["role"]).count("sep1") == 1 and table["role"].iloc[-1] == "sep2"
    pattern0 = cache["blocks.0.attn.hook_pattern"][0].numpy()
    np.testing.assert_allclose(table["attention_from_source"], pattern0.mean(0)[0], atol=1e-6)

    at.selectbox(key="pair_layer").set_value(2).run()
    at.selectbox(key="pair_head").set_value(1).run()
    at.selectbox(key="pair_source").set_value(3).run()
    no_trouble(at)
    table = frame(at, "attention_from_source")
    pattern2 = cache["blocks.2.attn.hook_pattern"][0].numpy()
    np.testing.assert_allclose(table["attention_from_source"], pattern2[1][3], atol=1e-6)
    np.testing.assert_allclose(table["attention_received"], pattern2[1].mean(0), atol=1e-6)

    heads = next(c for c in at.get("vega_lite_chart") if "per head" in c.proto.spec)  # the head view
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    view = convert_arrow_bytes_to_pandas_df(heads.proto.datasets[0].data.data)
    assert sorted(view["head"].unique()) == list(range(pattern2.shape[0]))
    np.testing.assert_allclose(
        view.sort_values(["head", "col"])["weight"], pattern2[:, 3, :].ravel(), atol=1e-6
    )  # token 3's row in every head of layer 2
    at.radio(key="pair_crop").set_value("query → document").run()
    no_trouble(at)
    cells = heatmap_cells(at)
    roles_of = dict(zip(table["position"], table["role"]))
    assert len(cells) == list(table["role"]).count("query") * list(table["role"]).count("doc")
    assert set(cells["row"].map(roles_of)) == {"query"} and set(cells["col"].map(roles_of)) == {"doc"}
    np.testing.assert_allclose(cells["weight"], pattern2[1][cells["row"], cells["col"]], atol=1e-6)

    roles = frame(at, "abs_share")
    assert list(roles["role"]) == ["cls", "query", "sep1", "doc", "sep2"]
    assert roles["abs_share"].sum() == pytest.approx(1.0, abs=1e-6)
    assert roles.set_index("role").loc[["cls", "sep1", "sep2"], "attribution"].abs().max() == 0.0
    at.toggle(key="pair_ig").set_value(False).run()
    assert not [d for d in at.dataframe if "abs_share" in d.value.columns]
    assert any("Attributions are off" in c.value for c in at.caption)


def test_pair_view_masked_scorer_and_picking(demo, ce):
    at = open_app(demo, "pair")
    at.radio(key="pair_variant").set_value("MICE preset").run()
    no_trouble(at)
    query, doc = first_pair(demo)
    masked = MaskedCrossEncoder(ce, MaskSpec([Rule("mice-step3@2")])).score([(query, doc)])[0]
    assert metric(at, "Score (masked)") == pytest.approx(float(masked), abs=1e-4)
    at.number_input(key="pair_k").set_value(1).run()
    masked1 = MaskedCrossEncoder(ce, MaskSpec([Rule("mice-step3@1")])).score([(query, doc)])[0]
    assert metric(at, "Score (masked)") == pytest.approx(float(masked1), abs=1e-4)

    rs = load_collection(str(demo.beir))
    qid = rs.query_ids[1]
    at.selectbox(key="pick_qid").set_value(qid).run()
    no_trouble(at)
    assert at.text_area(key="pair_query_input").value == rs.queries[qid]
    top = rs.candidates[rs.candidates["query_id"] == qid].sort_values("rank")["doc_id"].tolist()
    assert at.text_area(key="pair_doc_input").value == rs.docs[top[0]]
    at.selectbox(key="pick_did").set_value(top[1]).run()
    assert at.text_area(key="pair_doc_input").value == rs.docs[top[1]]
    new = float(ce.score([(rs.queries[qid], rs.docs[top[1]])])[0])
    assert metric(at, "Score (full model)") == pytest.approx(new, abs=1e-4)


def test_pair_view_mask_spec_file(demo, ce):
    at = open_app(demo, "pair")
    at.radio(key="pair_variant").set_value("mask spec / MICE configuration file").run()
    options = at.selectbox(key="pair_spec_pick").options
    assert any(o.endswith("search.json") for o in options) and any(o.endswith("mice.json") for o in options)
    search = str(demo.search / "search.json")
    at.selectbox(key="pair_spec_pick").set_value(search).run()
    no_trouble(at)
    spec = MaskSpec.from_dict(json.loads((demo.search / "search.json").read_text())["removed"])
    query, doc = first_pair(demo)
    expected = MaskedCrossEncoder(ce, spec).score([(query, doc)])[0]
    assert metric(at, "Score (masked)") == pytest.approx(float(expected), abs=1e-4)

    at.text_input(key="pair_spec_path").set_value(str(demo.root / "nope.json")).run()
    assert not at.exception
    assert any("cannot be read" in e.value for e in at.error)


def test_pair_view_mice_configuration(demo, ce):
    pytest.importorskip("ablations.mice.model")
    from ablations.mice.config import MiceConfig, spec_from_interactions
    from ablations.mice.model import MiceModel

    at = open_app(demo, "pair")
    at.radio(key="pair_variant").set_value("mask spec / MICE configuration file").run()
    at.selectbox(key="pair_spec_pick").set_value(str(demo.mice / "mice.json")).run()
    no_trouble(at)
    query, doc = first_pair(demo)
    cfg = MiceConfig.load(demo.mice / "mice.json")
    expected = float(MiceModel(ce, cfg).score([(query, doc)])[0])
    assert metric(at, "Score (MICE)") == pytest.approx(expected, abs=1e-4)
    # The attention shown is the model's under the configuration's effective mask: same score (joint
    # positions).
    effective = MaskedCrossEncoder(ce, spec_from_interactions(cfg.interactions())).score([(query, doc)])[0]
    assert float(effective) == pytest.approx(expected, abs=1e-4)


def test_a_mice_model_is_explored_as_mice(demo, ce):
    """A MICE folder as the sidebar's model: its own scores, only its kept layers, its mask in the attention
    (documents never read the query), and live removals added to its mask."""
    from ablations.mice.config import MiceConfig
    from ablations.mice.model import MiceModel

    cfg = MiceConfig.load(demo.mice / "mice.json")
    mice = MiceModel(ce, cfg)
    query, doc = first_pair(demo)
    at = open_app(demo, "pair", model=demo.mice)
    no_trouble(at)
    assert metric(at, "Score (MICE model)") == pytest.approx(float(mice.score([(query, doc)])[0]), abs=1e-4)
    assert at.selectbox(key="pair_layer").options == [str(i) for i in range(cfg.drop_layer)]
    first_doc = int(list(frame(at, "attention_from_source")["role"]).index("doc"))
    at.selectbox(key="pair_source").set_value(first_doc).run()
    no_trouble(at)
    table = frame(at, "attention_from_source")
    assert (
        table.loc[table["role"] == "query", "attention_from_source"].abs().max() == 0.0
    )  # docs never read it
    assert table.loc[table["role"] == "doc", "attention_from_source"].sum() > 0.5

    edits = {"edited_rows": {0: {"L1": True}}, "added_rows": [], "deleted_rows": []}
    at = open_app(
        demo,
        "ablation",
        model=demo.mice,
        state={"pair_query": query, "pair_doc": doc, f"abl_toggles_{cfg.drop_layer}": edits},
    )
    no_trouble(at)
    joined = dataclasses.replace(
        cfg, mask=MaskSpec([*cfg.mask.rules, Rule("query2doc", "1")])
    )  # row 0, layer 1
    expected = float(MiceModel(ce, joined).score([(query, doc)])[0])
    assert metric(at, "Score (MICE model)") == pytest.approx(float(mice.score([(query, doc)])[0]), abs=1e-4)
    assert metric(at, "Score (masked)") == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("field", ["pair_query_input", "pair_doc_input"])
def test_pair_view_empty_text_is_a_message(demo, field):
    at = open_app(demo, "pair")
    at.text_area(key=field).set_value("   ").run()
    assert not at.exception and not at.error
    assert any("empty" in w.value for w in at.warning)
    assert not [m for m in at.metric if m.label.startswith("Score")]


def test_model_that_fails_to_load_is_a_message(demo, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    at = open_app(demo, "pair", model=broken)
    assert not at.exception
    assert any("failed to load" in e.value and "broken" in e.value for e in at.error)
    at = open_app(demo, "ablation", model=tmp_path / "does-not-exist")
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)


def test_missing_default_model_says_how_to_get_it(demo, tmp_path, monkeypatch):
    monkeypatch.setenv("MICE_SHARED", str(tmp_path / "shared"))
    monkeypatch.setenv("MICE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MICE_MODEL", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update(view="pair", collection="none", results=str(demo.results))
    at.run()
    assert not at.exception
    assert any("Model not available" in e.value and "ablations.train" in e.value for e in at.error)


# ------------------------------------------------------------------------------------------- flow
def test_flow_view_heatmaps_per_layer_and_head(demo):
    at = open_app(demo, "flow")
    no_trouble(at)
    assert at.get("image"), "the flow heatmaps are drawn"
    fpq = read_table(demo.probe, "flows_per_query")
    expected = aggregate_flows(fpq, keys=("layer", "source", "target"))
    table = frame(at, "query_mean")
    assert "head" not in table.columns and sorted(table["layer"].unique()) == [0, 1, 2]
    merged = table.merge(
        expected.astype({"source": str, "target": str}),
        on=["layer", "source", "target"],
        suffixes=("", "_expected"),
    )
    assert len(merged) == len(expected) == 3 * 5 * 6
    np.testing.assert_allclose(merged["query_mean"], merged["query_mean_expected"], atol=1e-9)
    np.testing.assert_allclose(merged["query_std"], merged["query_std_expected"], atol=1e-9)
    assert (merged["queries"] == 4).all()

    at.toggle(key="flow_per_head").set_value(True).run()
    at.selectbox(key="flow_layer").set_value(1).run()
    no_trouble(at)
    table = frame(at, "query_mean")
    assert sorted(table["head"].unique()) == [0, 1, 2, 3] and set(table["layer"]) == {1}
    one = table[(table["head"] == 2) & (table["source"] == "doc") & (table["target"] == "query")][
        "query_mean"
    ]
    rows = fpq[
        (fpq["layer"] == 1) & (fpq["head"] == 2) & (fpq["source"] == "doc") & (fpq["target"] == "query")
    ]
    assert float(one.iloc[0]) == pytest.approx(rows["value"].mean(), abs=1e-12)

    spec = lambda: json.loads(at.get("vega_lite_chart")[0].proto.spec)  # noqa: E731
    assert "query2doc" in json.dumps(spec())
    at.selectbox(key="flow_source").set_value("doc").run()
    at.selectbox(key="flow_target").set_value("cls").run()
    assert "doc2cls" in json.dumps(spec())


def test_unreadable_results_file_is_a_message(demo, tmp_path):
    folder = tmp_path / "results" / "probe"
    folder.mkdir(parents=True)
    (folder / "flows_per_query.parquet").write_bytes(b"this is not parquet")
    write_table(pd.DataFrame({"x": [1]}), tmp_path / "ignored", "flows_per_query", manifest(kind="probe"))
    (folder / "flows_per_query.json").write_text((tmp_path / "ignored" / "flows_per_query.json").read_text())
    at = open_app(demo, "flow", results=tmp_path / "results")
    assert not at.exception
    assert any("unreadable" in e.value for e in at.error)
    write_table(read_table(demo.probe, "flows_per_query"), folder, "flows_per_query", manifest(kind="probe"))
    (folder / "flows_per_query.json").write_text("{ broken")
    at = open_app(demo, "flow", results=tmp_path / "results")
    assert not at.exception
    assert any("not JSON" in e.value for e in at.error)


def test_views_without_results_say_what_to_run(demo, tmp_path):
    for view, text in (
        ("flow", "python -m probe.run"),
        ("ablation", "python -m ablations.sweep"),
        ("mice", "No MICE comparison yet: run `python -m ablations.compare`"),
    ):
        at = open_app(demo, view, results=tmp_path / "empty")
        assert not at.exception and not at.error
        assert any(text in i.value for i in at.info), (view, [i.value for i in at.info])


# --------------------------------------------------------------------------------------- ablation
def test_ablation_live_toggles_rescore_the_pair(demo, ce):
    query = "capital of france"
    doc = "Paris is the capital and largest city of France."
    edits = {"edited_rows": {1: {"L0": True, "L2": True}}, "added_rows": [], "deleted_rows": []}
    at = open_app(
        demo,
        "ablation",
        collection="none",  # a typed pair
        state={"pair_query": query, "pair_doc": doc, "abl_toggles_3": edits},
    )
    no_trouble(at)
    spec = MaskSpec([Rule("doc2query", "0,2")])
    expected = float(MaskedCrossEncoder(ce, spec).score([(query, doc)])[0])
    full = float(ce.score([(query, doc)])[0])
    assert metric(at, "Score (full model)") == pytest.approx(full, abs=1e-4)
    assert metric(at, "Score (masked)") == pytest.approx(expected, abs=1e-4)
    assert "--remove doc2query:0,2:all" in at.code[0].value
    assert [b for b in at.get("download_button")], "the mask spec can be downloaded"

    at.selectbox(key="abl_preset").set_value("mice-step2").run()
    spec = MaskSpec([Rule("mice-step2"), Rule("doc2query", "0,2")])
    assert metric(at, "Score (masked)") == pytest.approx(
        float(MaskedCrossEncoder(ce, spec).score([(query, doc)])[0]), abs=1e-4
    )
    at.text_input(key="abl_extra").set_value("bogus2thing").run()
    assert not at.exception
    assert any("unknown interaction" in e.value and "bogus2thing" in e.value for e in at.error)


def test_ablation_live_picks_the_collections_queries_and_candidates(demo, ce):
    """Opened on a collection, the live view scores that collection's pairs (not a built-in example); a
    ticked cell rescoring the picked pair."""
    rs = load_collection(str(demo.beir))
    at = open_app(demo, "ablation")
    no_trouble(at)
    qid = rs.query_ids[1]
    at.selectbox(key="pick_qid").set_value(qid).run()
    no_trouble(at)
    cands = rs.candidates[rs.candidates["query_id"] == qid].sort_values("rank")["doc_id"].tolist()
    at.selectbox(key="pick_did").set_value(cands[-1]).run()
    query, doc = rs.queries[qid], rs.docs[cands[-1]]
    assert at.text_area(key="abl_query_input").value == query
    assert metric(at, "Score (full model)") == pytest.approx(float(ce.score([(query, doc)])[0]), abs=1e-4)
    at.session_state["abl_toggles_3"] = {
        "edited_rows": {1: {"L1": True}},
        "added_rows": [],
        "deleted_rows": [],
    }
    at.run()
    expected = float(MaskedCrossEncoder(ce, MaskSpec([Rule("doc2query", "1")])).score([(query, doc)])[0])
    assert metric(at, "Score (masked)") == pytest.approx(expected, abs=1e-4)


def test_ablation_live_with_nothing_removed(demo, ce):
    at = open_app(
        demo,
        "ablation",
        collection="none",
        state={"pair_query": "flu symptoms", "pair_doc": "Fever and cough."},
    )
    no_trouble(at)
    assert any("Nothing removed yet" in i.value for i in at.info)
    assert metric(at, "Score (full model)") == pytest.approx(
        float(ce.score([("flu symptoms", "Fever and cough.")])[0]), abs=1e-4
    )
    assert not [m for m in at.metric if m.label == "Score (masked)"]


def test_ablation_results_sweep_heatmap(demo):
    at = open_app(demo, "ablation")
    at.selectbox(key="abl_folder").set_value("ablations/sweep").run()
    no_trouble(at)
    assert at.get("image"), "the Δ heatmap is drawn"
    summary = read_table(demo.sweep, "summary")
    for measure in ("nDCG@10", "RR@10"):
        if measure != "nDCG@10":
            at.selectbox(key="abl_measure").set_value(measure).run()
        grid = frame(at, "significance")
        rows = summary[summary["measure"] == measure]
        expected = rows.set_index(["cell_interaction", "cell_layers"])["delta"]
        got = grid.set_index(["interaction", "layers"])["delta"]
        assert len(got) == len(expected) == 9
        np.testing.assert_allclose(got.sort_index(), expected.sort_index(), atol=1e-12)
        for p, mark in zip(grid["p"], grid["significance"]):
            assert mark == ("***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "")


def test_ablation_results_single_runs_show_bm25(demo, tmp_path):
    """A folder of ``ablations.run`` runs lists each mask with the full and ablated model against BM25."""
    from ablations.experiments.runner import Experiment, Settings, run_meta, write_results
    from probe.model import CrossEncoder

    ce = CrossEncoder.from_pretrained(demo.model, max_length=64)
    exp = Experiment(ce, load_collection(str(demo.beir)), Settings(n_boot=200), use_cache=False)
    runs = [exp.run(MaskSpec.remove("doc2query")), exp.run(MaskSpec.remove("cls2doc", layers="1"))]
    write_results(runs, tmp_path / "results" / "runs", run_meta(exp, "ablation-run"))
    at = open_app(demo, "ablation", results=tmp_path / "results")
    at.selectbox(key="abl_folder").set_value("runs").run()
    no_trouble(at)
    shown = frame(at, "delta_bm25")
    want = pd.concat([r.summary for r in runs])
    want = want[want["measure"] == "nDCG@10"].set_index("spec_label")
    got = shown.set_index("spec_label").loc[want.index]
    for col in ("bm25_mean", "baseline_delta_bm25", "delta_bm25", "p_bm25"):
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float), atol=1e-12)


def test_a_partial_sweep_is_marked_partial(demo, tmp_path):
    import shutil

    from ablations.results import read_manifest, write_table

    meta = read_manifest(demo.sweep, "summary")
    assert meta["finished"] == meta["cells"] == 9  # the demo's sweep is whole: no warning
    at = open_app(demo, "ablation")
    at.selectbox(key="abl_folder").set_value("ablations/sweep").run()
    assert not [w for w in at.warning if "Partial sweep" in w.value]
    part = tmp_path / "results" / "sweep"
    shutil.copytree(demo.sweep, part)
    summary = read_table(demo.sweep, "summary")
    first = summary["cell_interaction"].iloc[0]
    write_table(summary[summary["cell_interaction"] == first], part, "summary", {**meta, "finished": 3})
    at = open_app(demo, "ablation", results=tmp_path / "results")
    at.selectbox(key="abl_folder").set_value("sweep").run()
    no_trouble(at)
    assert any("Partial sweep: 3 of 9 cells finished" in w.value for w in at.warning)


def test_ablation_folders_offer_searches_then_sweeps_then_runs():
    from app.data import ResultFolder, TableInfo, ablation_folders

    def folder(name, kind, *tables):
        return ResultFolder(Path(name), {t: TableInfo(Path(name), t, kind) for t in ("summary", *tables)})

    found = [
        folder("runs", "ablation-run", "per_query"),
        folder("sweep", "ablation-sweep", "per_query"),
        folder("search", "ablation-search", "steps"),
        folder("probe", "probe-flows"),
    ]
    assert [f.path.name for f in ablation_folders(found)] == ["search", "sweep", "runs"]


def test_ablation_results_search_minimal_set(demo):
    at = open_app(demo, "ablation")
    at.selectbox(key="abl_folder").set_value("ablations/search").run()
    no_trouble(at)
    assert any(s.value == "Minimal surviving set" for s in at.subheader)
    doc = json.loads((demo.search / "search.json").read_text())
    grid = frame(at, "layer 0").set_index("interaction")
    removed = {(r["interaction"], la) for r in doc["removed"]["rules"] for la in _layers(r["layers"])}
    surviving = {(u["interaction"], la) for u in doc["surviving"] for la in _layers(u["layers"])}
    for inter, row in grid.iterrows():
        for col, value in row.items():
            la = int(col.split()[1])
            assert value == (
                "removed" if (inter, la) in removed else "survives" if (inter, la) in surviving else ""
            )
    steps = read_table(demo.search, "steps")
    assert metric(at, "Units removed") == steps["added"].sum() == len(removed)  # tiny model: units are layers
    assert metric(at, "Units surviving") == len(doc["surviving"])
    alone = steps[steps["phase"] == "alone"]
    got = frame(at, "significance").set_index(["interaction", "layers"])["delta"].sort_index()
    np.testing.assert_allclose(
        got, alone.set_index(["interaction", "layers"])["delta"].sort_index(), atol=1e-12
    )


def _layers(text: str) -> list[int]:
    out = []
    for part in str(text).split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


# ------------------------------------------------------------------------------------------- MICE
def test_mice_view_table_pareto_and_download(demo):
    at = open_app(demo, "mice")
    no_trouble(at)
    table = frame(at, "nDCG@10")
    assert len(table) == 6 and {
        "RR@10",
        "Δ nDCG@10",
        "significance",
        "latency",
        "storage",
        "parameters",
    } <= set(table.columns)
    assert table.loc[table["name"] == "cross-encoder", "p"].tolist() == [""]  # blank, never "None"
    rows = table.set_index("name")
    assert rows.loc["mice-retrained", "nDCG@10"] == pytest.approx(0.64)
    assert rows.loc["mice-retrained", "Δ nDCG@10"] == pytest.approx(-0.06)
    assert rows.loc["slow-and-bad", "significance"] == "**" and rows.loc["lite", "significance"] == ""
    assert rows.loc["mice-masked", "kind"] == "masked" and rows.loc["mice-retrained", "kind"] == "mice"
    front = next(c.value for c in at.caption if c.value.startswith("Dashed line"))
    assert re.findall(r"`([^`]+)`", front) == [
        "maxsim",
        "lite",
        "mice-retrained",
        "mice-masked",
        "cross-encoder",
    ]
    chart = json.dumps(json.loads(at.get("vega_lite_chart")[0].proto.spec))
    assert "nDCG@10" in chart and "latency_ms_per_query" in chart
    at.selectbox(key="mice_measure").set_value("RR@10").run()
    assert "RR@10" in json.dumps(json.loads(at.get("vega_lite_chart")[0].proto.spec))
    assert frame(at, "Δ RR@10").set_index("name").loc["maxsim", "Δ RR@10"] == pytest.approx(-0.12)
    buttons = at.get("download_button")
    assert buttons and "MICE configuration" in buttons[0].proto.label
    assert Path(at.selectbox(key="mice_config").value).name == "mice.json"
    assert any("layers ×" in m.value for m in at.markdown), [m.value for m in at.markdown]  # its summary


def test_mice_view_reads_a_wide_table_with_other_names(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the working folder is searched for configurations too
    df = pd.DataFrame(
        {
            "system": ["ce", "mice-l2+3", "maxsim"],
            "dataset": ["dl19"] * 3,
            "nDCG@10": [0.72, 0.70, 0.60],
            "ms_per_query": [30.0, 9.0, 2.0],
            "index_bytes": [0, 5e8, 9e9],
        }
    )
    elsewhere = tmp_path / "configs" / "cfg.json"
    elsewhere.parent.mkdir()
    from ablations.mice.config import preset

    preset("mice-l2+3", 6, 12, "x").save(elsewhere)
    write_table(
        df,
        tmp_path / "results" / "compare",
        "comparison",
        manifest(kind="mice-compare", settings={"config": str(elsewhere)}),
    )
    at = open_app(demo, "mice", results=tmp_path / "results")
    no_trouble(at)
    table = frame(at, "nDCG@10")
    assert list(table["name"]) == ["ce", "mice-l2+3", "maxsim"]
    assert list(table["kind"]) == ["cross-encoder", "mice", "maxsim"]
    assert {"latency", "storage"} <= set(table.columns)
    used = next(c.value for c in at.caption if "columns used" in c.value)
    assert "ms_per_query" in used and "index_bytes" in used
    assert at.selectbox(key="mice_config").value == str(Path("configs") / "cfg.json")  # under the cwd
    (tmp_path / "configs" / "cfg.json").unlink()
    at = open_app(demo, "mice", results=tmp_path / "results")
    assert any("No MICE configuration under" in i.value for i in at.info)


def test_mice_view_reads_a_configuration_alone(demo, tmp_path, monkeypatch):
    """No comparison table: the view still shows the configuration found under the working folder (where
    the docs' export writes, runs/mice/mice.json): summary, layer × interaction grid, table, download."""
    from ablations.mice.config import MiceConfig, preset

    monkeypatch.chdir(tmp_path)
    cfg = preset("mice-l4+3", 12, 12, "reference")
    cfg.save(tmp_path / "runs" / "mice" / "mice.json")
    at = open_app(demo, "mice", results=tmp_path / "results")
    no_trouble(at)
    assert any("No MICE comparison yet" in i.value for i in at.info)
    assert at.selectbox(key="mice_config").value == str(Path("runs") / "mice" / "mice.json")
    text = " ".join(m.value for m in at.markdown)
    assert "12 layers × 12 heads" in text and "layers 0-6 run, 5 dropped" in text
    assert "interaction from layer 4" in text
    grid = frame(at, "L11").set_index("interaction")
    assert list(grid.columns) == [f"L{i}" for i in range(12)]
    assert grid.loc["query2doc", "L3"] == "removed" and grid.loc["query2doc", "L4"] == "kept"
    assert grid.loc["doc2query", "L5"] == "removed" and (grid["L7"] == "dropped").all()
    assert grid.loc["query2query", "L0"] == "kept"
    charts = [c for c in at.get("vega_lite_chart") if "attention kept per layer" in c.proto.spec]
    assert charts, "the layer × interaction grid is drawn"
    buttons = at.get("download_button")
    assert buttons and "MICE configuration" in buttons[0].proto.label
    assert MiceConfig.from_json(json.dumps(json.loads((tmp_path / "runs/mice/mice.json").read_text()))) == cfg


def test_mice_view_unusable_table_is_a_message(demo, tmp_path):
    write_table(
        pd.DataFrame({"foo": [1.0]}),
        tmp_path / "results" / "compare",
        "comparison",
        manifest(kind="mice-compare"),
    )
    at = open_app(demo, "mice", results=tmp_path / "results")
    assert not at.exception
    assert any("no scorer column" in e.value for e in at.error)


# --------------------------------------------------------------------------------------- caching
def test_models_and_tables_are_cached(demo):
    from app import data

    a, path = data.load_model(str(demo.model))
    b, _ = data.load_model(str(demo.model))
    assert a is b and path == str(demo.model.resolve())
    t1 = data.table(demo.probe, "flows_per_query")
    calls = []
    original = data.read_table
    data.read_table = lambda *args: calls.append(args) or original(*args)
    try:
        t2 = data.table(demo.probe, "flows_per_query")
    finally:
        data.read_table = original
    assert not calls and t1.equals(t2)
