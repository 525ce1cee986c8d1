"""The export → compare command lines on tiny saved models and a tiny BEIR collection; bad input in one
line."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from test_ablation_support import run_cli, save_tiny_model, write_tiny_beir

from ablations import compare as compare_cli
from ablations import export as export_cli
from ablations.data.readers import read_trec_run
from ablations.experiments.compare import PARTIAL
from ablations.mice.config import MiceConfig
from ablations.mice.late_interaction import LateInteractionScorer
from ablations.mice.model import MiceModel

SMALL = ["--max-length", "64", "--max-query-length", "16", "--max-doc-length", "40"]


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_in_process(main, args, capsys) -> Result:
    """The CLI's ``main`` in this process (no interpreter start-up per call): exit code, stdout, stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(args)
    out = capsys.readouterr()
    return Result(exit_.value.code, out.out, out.err)


def _assert_run_scores(out, tag, rs, expected) -> None:
    """The TREC run ``ablations.evaluate`` wrote for ``tag`` holds ``expected`` (scores of ``rs.pairs()``)."""
    got = read_trec_run(next(out.glob(f"*.{tag}.trec")))
    cand = (
        rs.candidates[["query_id", "doc_id"]].assign(expected=expected).merge(got, on=["query_id", "doc_id"])
    )
    assert len(cand) == len(rs.candidates) and (cand["expected"] - cand["score"]).abs().max() < 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("mice-cli")
    return root, save_tiny_model(root / "ce", tokenizer, layers=3), write_tiny_beir(root / "beir")


def test_export_from_preset_builds_config_and_index(tiny):
    root, model, beir = tiny
    out = root / "preset" / "mice.json"
    res = run_cli(
        "ablations.export",
        ["--from", "mice-l1+2", "--model", str(model), "--out", str(out), *SMALL, "--index", str(beir)],
        root / "cache",
    )
    assert res.returncode == 0, res.stderr
    cfg = MiceConfig.load(out)
    assert (cfg.merge_layer, cfg.drop_layer, cfg.plan) == (1, 3, "doc-cache")
    assert "plan: doc-cache" in res.stdout and "layer 2: " in res.stdout
    assert "document-state index" in res.stdout and "KiB per document" in res.stdout
    index = out.with_name("doc-states-beir.safetensors")
    MiceModel.load(out).attach_index(index)  # the fingerprint matches the exported model


def test_export_from_search_result_spec_and_config(tiny, capsys):
    root, model, _ = tiny
    search = root / "search"
    search.mkdir()
    removed = {
        "schema_version": 1,
        "rules": [
            {"interaction": "mice-step2", "layers": "all", "heads": "all"},
            {"interaction": "query2doc", "layers": "0", "heads": "all"},
        ],
    }
    (search / "search.json").write_text(
        json.dumps({"removed": removed, "removed_label": "x", "measure": "nDCG@10"})
    )
    res = run_in_process(
        export_cli.main,
        ["--from", str(search), "--model", str(model), "--out", str(root / "s.json"), *SMALL],
        capsys,
    )
    assert res.returncode == 0, res.stderr
    cfg = MiceConfig.load(root / "s.json")
    assert cfg.source["from"].endswith("search.json") and cfg.plan == "doc-cache"
    assert cfg.interactions()[0]["removed"].count("query2doc") == 1
    # a mask spec file with an explicit merge layer and a chosen plan
    (root / "spec.json").write_text(
        json.dumps(
            {"schema_version": 1, "rules": [{"interaction": "doc2query", "layers": "all", "heads": "all"}]}
        )
    )
    res = run_in_process(
        export_cli.main,
        [
            "--from",
            str(root / "spec.json"),
            "--model",
            str(model),
            "--merge-layer",
            "1",
            "--positions",
            "joint",
            "--out",
            str(root / "j.json"),
            *SMALL,
        ],
        capsys,
    )
    assert res.returncode == 0, res.stderr
    cfg = MiceConfig.load(root / "j.json")
    assert cfg.plan == "split" and cfg.merge_layer == 1 and "merge 1" in res.stdout
    # re-export a configuration with one field changed
    res = run_in_process(
        export_cli.main,
        [
            "--from",
            str(root / "j.json"),
            "--drop-layer",
            "2",
            "--plan",
            "masked",
            "--out",
            str(root / "k.json"),
        ],
        capsys,
    )
    assert res.returncode == 0, res.stderr
    again = MiceConfig.load(root / "k.json")
    assert (again.drop_layer, again.plan, again.merge_layer) == (2, "masked", 1)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--from", "mice-step9"], "unknown MICE preset 'mice-step9'"),
        (["--from", "nowhere.json"], "is neither a file, a folder nor a preset"),
        (
            ["--from", "mice-step2", "--plan", "split"],
            "plan 'split' does not compute this configuration exactly",
        ),
        (["--from", "mice-step2", "--drop-layer", "9"], "drop_layer 9 must be in 1..3"),
    ],
)
def test_export_bad_input_is_one_line(tiny, args, message, capsys):
    root, model, _ = tiny
    res = run_in_process(
        export_cli.main, [*args, "--model", str(model), "--out", str(root / "bad.json")], capsys
    )
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, (
        res.stderr
    )


def test_other_schema_version_and_bad_cache_are_refused_by_the_clis(tiny, capsys):
    root, model, beir = tiny
    cfg = json.loads(
        MiceConfig.from_dict(
            {
                "schema_version": 1,
                "base_model": str(model),
                "num_layers": 3,
                "num_heads": 4,
                "mask": {"rules": []},
            }
        ).to_json()
    )
    (root / "v2.json").write_text(json.dumps({**cfg, "schema_version": 2}))
    res = run_cli(
        "ablations.export", ["--from", str(root / "v2.json"), "--out", str(root / "x.json")], root / "cache"
    )
    assert (
        res.returncode == 2
        and "schema_version 2; this toolkit reads MICE config schema_version 1" in res.stderr
    )
    MiceConfig.from_dict(
        {
            "schema_version": 1,
            "base_model": str(model),
            "num_layers": 4,
            "num_heads": 4,
            "mask": {"rules": []},
            "max_length": 64,
        }
    ).save(root / "l4.json")
    res = run_in_process(
        compare_cli.main,
        [
            "--reference",
            str(model),
            "--config",
            str(root / "l4.json"),
            "--collections",
            str(beir),
            "--out",
            str(root / "cmp-bad"),
        ],
        capsys,
    )
    assert res.returncode == 2 and "MICE config is for 4 layers" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_compare_writes_the_common_results_table(tiny, tokenizer, capsys):
    root, model, beir = tiny
    cfg = root / "cmp" / "mice.json"
    assert (
        run_in_process(
            export_cli.main, ["--from", "mice-l1+2", "--model", str(model), "--out", str(cfg), *SMALL], capsys
        ).returncode
        == 0
    )
    MiceModel.load(cfg).save(root / "cmp" / "mice-model")  # stands in for a retrained model
    # MaxSim on the first 2 of the 3 layers (--encoder-layers), LITE on all of them
    LateInteractionScorer.from_cross_encoder(str(model), "maxsim", encoder_layers=2, max_doc_length=40).save(
        root / "cmp" / "maxsim"
    )
    LateInteractionScorer.from_cross_encoder(str(model), "lite", max_doc_length=40).save(
        root / "cmp" / "lite"
    )
    out = root / "cmp" / "results"
    res = run_in_process(
        compare_cli.main,
        [
            "--reference",
            str(model),
            "--config",
            str(cfg),
            "--mice",
            str(root / "cmp" / "mice-model"),
            "--mice-variant",
            f"again={root / 'cmp' / 'mice-model'}",
            "--maxsim",
            str(root / "cmp" / "maxsim"),
            "--lite",
            str(root / "cmp" / "lite"),
            "--collections",
            str(beir),
            "--latency-queries",
            "2",
            "--bootstrap",
            "200",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert res.returncode == 0, res.stderr
    table = pd.read_parquet(out / "comparison.parquet")
    meta = json.loads((out / "comparison.json").read_text())
    assert meta["kind"] == "mice-compare" and meta["reference"] == "cross-encoder"
    assert set(table["model"]) == {
        "cross-encoder",
        "mice-masked",
        "mice-retrained",
        "mice-retrained-again",  # --mice-variant LABEL=FOLDER: one more retrained MICE row
        "maxsim",
        "lite",
    }
    assert {"nDCG@10", "RR@10"} <= set(table["measure"])
    ref = table[table["reference"]]
    assert ref["p"].isna().all() and (ref["delta"] == 0).all()
    # the saved MICE model is the masked one (same weights): identical per-query values
    mm = table[table["model"] == "mice-masked"].set_index("measure")["mean"]
    mr = table[table["model"] == "mice-retrained"].set_index("measure")["mean"]
    assert (mm - mr).abs().max() < 1e-9
    again = table[table["model"] == "mice-retrained-again"].set_index("measure")["mean"]
    assert (again - mr).abs().max() < 1e-9
    assert (table[table["model"] == "maxsim"]["storage_bytes_per_doc"] > 0).all()
    assert (table[table["model"] == "cross-encoder"]["storage_bytes_per_doc"] == 0).all()
    assert (table["latency_ms_per_query"] > 0).all() and (table["parameters"] > 0).all()
    params = table.groupby("model")["parameters"].first()
    assert params["maxsim"] < params["lite"]  # one layer fewer
    per_q = pd.read_parquet(out / "per_query.parquet")
    assert set(per_q.columns) >= {"model", "collection", "domain", "query_id", "measure", "value"}
    assert "mice-masked" in res.stdout and "ms/query" in res.stdout


def test_a_mice_model_runs_as_mice_in_evaluate_probe_and_runner(tiny, capsys):
    """``ablations.evaluate`` runs a MICE configuration by its plan; the probe and the ablation runner run its
    masked plan (the same scores), never its weights unmasked."""
    root, model, beir = tiny
    config = root / "guard" / "mice.json"
    res = run_cli(
        "ablations.export",
        ["--from", "mice-l1+2", "--model", str(model), "--out", str(config), *SMALL],
        root / "cache",
    )
    assert res.returncode == 0, res.stderr
    from ablations import evaluate as evaluate_cli
    from ablations import run as run_cli_module
    from probe import run as probe_cli

    out = root / "guard" / "eval"
    res = run_in_process(
        evaluate_cli.main, ["--model", str(config), "--collection", str(beir), "--out", str(out)], capsys
    )
    assert res.returncode == 0, res.stderr
    table = pd.read_parquet(out / "metrics.parquet")
    assert set(table["run"]) == {"bm25", "mice"}
    from ablations.data.collections import load_collection

    rs = load_collection(str(beir))
    expected = MiceModel.load(config).score(rs.pairs())  # the plan's scores, pair by pair
    _assert_run_scores(out, "mice", rs, expected)
    res = run_in_process(
        evaluate_cli.main,
        ["--model", str(config), "--collection", str(beir), "--max-length", "32", "--out", str(out)],
        capsys,
    )
    assert res.returncode == 2 and "--max-length 32 does not apply to the MICE model" in res.stderr
    # the probe and the ablation runner run it as its masked plan: kept layers only, MICE scores
    res = run_in_process(
        probe_cli.main,
        [
            "--model",
            str(config.parent),
            "--collection",
            str(beir),
            "--queries",
            "2",
            "--flow-pairs",
            "1",
            "--attribution-pairs",
            "1",
            "--ig-steps",
            "4",
            "--out",
            str(root / "p"),
        ],
        capsys,
    )
    assert res.returncode == 0, res.stderr
    probe_scores = pd.read_parquet(root / "p" / "scores.parquet")
    cand = (
        rs.candidates[["query_id", "doc_id"]]
        .assign(expected=expected)
        .merge(probe_scores, on=["query_id", "doc_id"])
    )
    assert len(cand) and (cand["expected"] - cand["score"]).abs().max() < 1e-4
    flows = pd.read_parquet(root / "p" / "flows.parquet")
    assert sorted(flows["layer"].unique()) == [0, 1, 2]  # mice-l1+2 on 3 layers: drop_layer 3
    assert flows.query("source == 'doc' and target == 'query'")["value"].abs().max() == 0.0
    meta = json.loads((root / "p" / "scores.json").read_text())
    assert "MICE" in meta["settings"]["model_kind"]
    res = run_in_process(
        run_cli_module.main,
        [
            "--model",
            str(config.parent),
            "--collection",
            str(beir),
            "--remove",
            "query2doc",
            "--layers",
            "1",
            "--out",
            str(root / "r"),
        ],
        capsys,
    )
    assert res.returncode == 0, res.stderr
    summary = pd.read_parquet(root / "r" / "summary.parquet")
    assert set(summary["model"]) == {str(config.parent)} and set(summary["layers"]) == {"1"}
    assert "MICE" in json.loads((root / "r" / "summary.json").read_text())["settings"]["model_kind"]
    from reports import build as report_cli  # the report reads both folders and names the MICE model

    res = run_in_process(
        report_cli.main, ["--results", str(root / "r"), "--out", str(root / "r" / "report.html")], capsys
    )
    assert res.returncode == 0, res.stderr
    assert "model_kind=MICE" in (root / "r" / "report.html").read_text()
    res = run_in_process(
        run_cli_module.main,
        [
            "--model",
            str(config.parent),
            "--collection",
            str(beir),
            "--remove",
            "query2doc",
            "--layers",
            "3",
            "--out",
            str(root / "r"),
        ],
        capsys,
    )
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "beyond the last layer 2" in lines[0], res.stderr


@pytest.mark.parametrize("kind", ["maxsim", "lite"])
def test_evaluate_takes_a_late_interaction_folder(tiny, capsys, tokenizer, kind):
    """``ablations.evaluate --model runs/mice/maxsim`` scores with the saved baseline, the same scores as
    loading
    it in Python; --max-length is refused in one line (the folder sets the lengths)."""
    root, model, beir = tiny
    folder = LateInteractionScorer.from_cross_encoder(
        str(model), kind, max_doc_length=40, max_query_length=16
    ).save(root / kind)
    from ablations import evaluate as evaluate_cli
    from ablations.data.collections import load_collection

    out = root / f"eval-{kind}"
    res = run_in_process(
        evaluate_cli.main, ["--model", str(folder), "--collection", str(beir), "--out", str(out)], capsys
    )
    assert res.returncode == 0, res.stderr
    assert set(pd.read_parquet(out / "metrics.parquet")["run"]) == {"bm25", kind}
    rs = load_collection(str(beir))
    expected = LateInteractionScorer.load(folder).score(rs.pairs())
    _assert_run_scores(out, kind, rs, expected)
    res = run_in_process(
        evaluate_cli.main,
        ["--model", str(folder), "--collection", str(beir), "--max-length", "32", "--out", str(out)],
        capsys,
    )
    assert res.returncode == 2 and "does not apply to the late-interaction model" in res.stderr


def test_export_refuses_a_configuration_whose_score_ignores_the_document(tiny):
    root, model, _ = tiny
    out = root / "blind" / "mice.json"
    res = run_cli(
        "ablations.export",
        ["--from", "mice-l1+1", "--model", str(model), "--out", str(out), *SMALL],
        root / "cache",
    )
    assert res.returncode == 2 and not out.exists()
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot depend on the document" in lines[0] and "N >= 2" in lines[0], (
        res.stderr
    )


def test_an_interrupted_compare_resumes_without_rescoring(tiny, capsys, monkeypatch):
    """Models scored before an interruption are read back from ``<out>/.partial`` (keyed by fingerprint and
    rerank set), the rest scored; the result equals an uninterrupted run's; a model with other weights is
    scored again."""
    root, model, beir = tiny
    cfg = root / "resume" / "mice.json"
    assert (
        run_in_process(
            export_cli.main, ["--from", "mice-l1+2", "--model", str(model), "--out", str(cfg), *SMALL], capsys
        ).returncode
        == 0
    )
    lite = LateInteractionScorer.from_cross_encoder(str(model), "lite", max_doc_length=40).save(
        root / "resume" / "lite"
    )
    args = [
        "--reference",
        str(model),
        "--config",
        str(cfg),
        "--lite",
        str(lite),
        "--collections",
        str(beir),
        "--latency-queries",
        "1",
        "--bootstrap",
        "50",
    ]
    whole = root / "resume" / "whole"
    assert run_in_process(compare_cli.main, [*args, "--out", str(whole)], capsys).returncode == 0

    out = root / "resume" / "cut"
    real_score = LateInteractionScorer.score

    def interrupted(self, *a, **kw):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(LateInteractionScorer, "score", interrupted)
    with pytest.raises(
        RuntimeError, match="interrupted"
    ):  # what an unexpected exception or kill leaves behind
        compare_cli.main([*args, "--out", str(out)])
    assert len(list((out / PARTIAL).glob(".*.key"))) == 2  # the cross-encoder and the masked MICE model
    assert not (out / "comparison.parquet").exists()
    monkeypatch.setattr(LateInteractionScorer, "score", real_score)
    from probe.model import CrossEncoder

    def no_rescoring(self, *a, **kw):
        raise AssertionError("the cross-encoder was scored again")

    monkeypatch.setattr(CrossEncoder, "score", no_rescoring)
    monkeypatch.setattr(MiceModel, "score", no_rescoring)
    # it fails only when timing latency (every model is timed again): the lite arm was scored and kept, the
    # others read back; had they been scored again, it would have failed before the lite arm was kept
    with pytest.raises(AssertionError, match="scored again"):
        compare_cli.main([*args, "--out", str(out)])
    monkeypatch.undo()
    res = run_in_process(compare_cli.main, [*args, "--out", str(out)], capsys)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("resumed") == 3  # every model × collection came from the partial folder
    cols = ["model", "collection", "query_id", "measure"]
    a = pd.read_parquet(whole / "per_query.parquet").sort_values(cols).reset_index(drop=True)
    b = pd.read_parquet(out / "per_query.parquet").sort_values(cols).reset_index(drop=True)
    assert a[cols].equals(b[cols]) and (a["value"] - b["value"]).abs().max() < 1e-6
    # other weights under the same name: a new fingerprint, so scored again (never a stale table)
    retrained = LateInteractionScorer.load(lite)
    with torch.no_grad():
        retrained.module.out.bias.add_(1.0)
    retrained.save(lite)
    res = run_in_process(compare_cli.main, [*args, "--out", str(out)], capsys)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("resumed") == 2 and re.search(r"lite +nDCG@10", res.stdout)


def test_paper_table_in_one_command(tiny, capsys):
    from ablations import paper as paper_cli

    root, model, beir = tiny
    out = root / "paper"
    args = ["--reference", str(model), "--collections", str(beir), "--latency-queries", "2", "--depth", "2"]
    res = run_in_process(paper_cli.main, [*args, "--bootstrap", "200", "--out", str(out)], capsys)
    assert res.returncode == 0, res.stderr
    cfg = MiceConfig.load(out / "mice.json")  # mice-final at this depth: 3 layers -> mice-l1+2
    assert (cfg.num_layers, cfg.merge_layer, cfg.drop_layer) == (3, 1, 3)
    table = pd.read_parquet(out / "paper.parquet")
    rows = ["bm25", "cross-encoder", "mice-step0", "mice-step1", "mice-step2", "mice-step3", "mice-masked"]
    assert table["model"].tolist() == rows
    assert table["paper_ndcg10"].isna().all()  # the paper reports nothing on this collection
    ref = table[table["model"] == "cross-encoder"].iloc[0]
    assert ref["speedup"] == 1.0 and np.isnan(ref["p"]) and ref["delta"] == 0
    models = table[table["model"] != "bm25"]
    assert models["latency_ms_per_query"].gt(0).all() and models["p"].iloc[1:].between(0, 1).all()
    # BM25: the candidates' own order, no latency measured; every other row is tested against it
    bm25 = table[table["model"] == "bm25"].iloc[0]
    per_q = pd.read_parquet(out / "per_query.parquet").query("measure == 'nDCG@10'")
    ce_q = per_q[per_q["model"] == "cross-encoder"].set_index("query_id")["value"]
    bm_q = per_q[per_q["model"] == "bm25"].set_index("query_id")["value"].reindex(ce_q.index)
    assert np.isnan(bm25["latency_ms_per_query"]) and np.isnan(bm25["p_bm25"]) and bm25["parameters"] == 0
    assert bm25["ndcg10"] == pytest.approx(bm_q.mean())
    assert ref["delta_bm25"] == pytest.approx((ce_q - bm_q).mean())
    assert ref["p_bm25"] == pytest.approx(stats.ttest_rel(ce_q, bm_q).pvalue, nan_ok=True)
    assert "against BM25" in res.stdout
    comparison = pd.read_parquet(out / "comparison.parquet")
    meta = json.loads((out / "paper.json").read_text())
    assert meta["kind"] == "mice-paper"
    assert meta["latency"]["candidates_per_query"] > 2  # latency on every candidate, not --depth's
    assert set(comparison["model"]) == set(rows)
    assert "not in this run: mice-retrained" in res.stdout and "ablations.retrain" in res.stdout
    assert "[paper's number]" in res.stdout


def test_the_paper_numbers_sit_beside_ours():
    from ablations.experiments.paper import PAPER, paper_table

    rows = []
    for model, lat in (("mice-retrained-cls", 20.0), ("cross-encoder", 100.0), ("mice-retrained", 10.0)):
        for coll in ("dl19", "dl20"):
            rows.append(
                {
                    "model": model,
                    "collection": coll,
                    "domain": "ID",
                    "measure": "nDCG@10",
                    "n": 43,
                    "mean": 0.7,
                    "delta": 0.0 if model == "cross-encoder" else -0.01,
                    "p": np.nan if model == "cross-encoder" else 0.2,
                    "reference": model == "cross-encoder",
                    "latency_ms_per_query": lat,
                    "storage_bytes_per_doc": 0.0,
                    "parameters": 10,
                }
            )
    table = paper_table(pd.DataFrame(rows)).set_index(["model", "collection"])
    assert table.loc[("cross-encoder", "dl19"), "paper_ndcg10"] == PAPER[("cross-encoder", "dl19")] == 0.755
    assert table.loc[("mice-retrained", "dl20"), "paper_ndcg10"] == 0.693
    assert abs(table.loc[("mice-retrained", "dl20"), "minus_paper"] - (0.7 - 0.693)) < 1e-12
    assert table.loc[("mice-retrained", "dl19"), "speedup"] == 10.0
    assert table.loc[("mice-retrained", "dl19"), "paper_speedup"] == 4.2
    # a MICE variant (another recipe) is MICE-ℓK+3 retrained too: same paper numbers, listed with that row
    assert table.loc[("mice-retrained-cls", "dl20"), "paper_ndcg10"] == 0.693
    assert table.loc[("mice-retrained-cls", "dl19"), "speedup"] == 5.0
    order = list(dict.fromkeys(table.index.get_level_values("model")))
    assert order == ["cross-encoder", "mice-retrained", "mice-retrained-cls"]


def test_mice_rows_are_tested_against_the_late_interaction_rows():
    """The paper's out-of-domain claim, MICE above late interaction, is a paired t-test per collection:
    every MICE row (masked, retrained, a variant) against MaxSim and LITE; no other row gets one."""
    from ablations.experiments.paper import paper_table

    rng = np.random.default_rng(0)
    models = ["cross-encoder", "mice-masked", "mice-retrained", "mice-retrained-long", "maxsim", "lite"]
    values = {m: rng.uniform(0, 1, 30) for m in models}
    per_q = pd.DataFrame(
        [
            {"model": m, "collection": "scifact", "query_id": str(q), "measure": "nDCG@10", "value": v}
            for m in models
            for q, v in enumerate(values[m])
        ]
    )
    summary = pd.DataFrame(
        [
            {
                "model": m,
                "collection": "scifact",
                "domain": "OOD",
                "measure": "nDCG@10",
                "n": 30,
                "mean": float(values[m].mean()),
                "delta": float((values[m] - values["cross-encoder"]).mean()),
                "p": 0.5,
                "reference": m == "cross-encoder",
                "latency_ms_per_query": 1.0,
                "storage_bytes_per_doc": 0.0,
                "parameters": 1,
            }
            for m in models
        ]
    )
    table = paper_table(summary, per_q, bootstrap=100).set_index("model")
    for m in ("mice-masked", "mice-retrained", "mice-retrained-long"):
        for late in ("maxsim", "lite"):
            assert table.loc[m, f"delta_{late}"] == pytest.approx((values[m] - values[late]).mean())
            assert table.loc[m, f"p_{late}"] == pytest.approx(stats.ttest_rel(values[m], values[late]).pvalue)
    assert table.loc[["cross-encoder", "maxsim", "lite"], ["p_maxsim", "p_lite"]].isna().all().all()


@pytest.mark.parametrize(
    "value,message",
    [("cls", "expected LABEL=FOLDER"), ("=x", "expected LABEL=FOLDER"), ("a b=x", "letters, digits")],
)
def test_a_bad_mice_variant_is_one_line(tiny, capsys, value, message):
    from ablations import paper as paper_cli

    root, model, beir = tiny
    res = run_in_process(
        paper_cli.main,
        ["--reference", str(model), "--mice-variant", value, "--out", str(root / "pv")],
        capsys,
    )
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (root / "pv").exists()


def test_paper_steps_on_a_subset_of_the_collections(tiny, capsys):
    """--step-collections scores the four masked steps (each a full cross-encoder pass) on some collections
    only; their other cells are missing, never filled in; a step collection that is not compared is one
    line, exit 2, before any model loads."""
    from ablations import paper as paper_cli

    root, model, beir = tiny
    other = write_tiny_beir(root / "beir-other")
    out = root / "paper-steps"
    args = ["--reference", str(model), "--collections", str(beir), str(other), "--latency-queries", "1"]
    bad = run_in_process(paper_cli.main, [*args, "--step-collections", "dl19", "--out", str(out)], capsys)
    assert bad.returncode == 2 and not out.exists()
    expected = f"error: --step-collections 'dl19' is not one of --collections: {beir}, {other}"
    assert bad.stderr.strip() == expected
    res = run_in_process(
        paper_cli.main,
        [*args, "--depth", "2", "--step-collections", str(beir), "--bootstrap", "200", "--out", str(out)],
        capsys,
    )
    assert res.returncode == 0, res.stderr
    table = pd.read_parquet(out / "paper.parquet")
    steps = table[table["model"].str.startswith("mice-step")]
    assert len(steps) == 4 and set(steps["collection"]) == {str(beir)}
    unmasked = table.loc[~table["model"].str.startswith("mice-step"), "collection"]
    assert set(unmasked) == {str(beir), str(other)}
    step_line = next(line for line in res.stdout.splitlines() if line.startswith("mice-step2"))
    assert "–" in step_line  # its cell on the other collection
    assert f"not scored on {other}" in res.stdout


def test_paper_passes_its_query_caps_to_the_comparison():
    from ablations.experiments.paper import PaperConfig

    cfg = PaperConfig(queries=7, ood_queries=3, step_collections=["dl19"]).compare_config()
    assert (cfg.queries, cfg.ood_queries, cfg.mask_collections) == (7, 3, ["dl19"])
    assert PaperConfig().compare_config().ood_queries is None  # default: every query
