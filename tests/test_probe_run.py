"""python -m probe.run: the tables and manifests it writes, its --help, and one-line errors."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ablations.experiments.probe import ProbeConfig, probe
from ablations.results import read_manifest, read_table
from probe.flows import FLOW_COLUMNS
from probe.model import CrossEncoder
from probe.roles import FLOW_ROLES
from probe.run import build_parser, main

REPO = Path(__file__).resolve().parents[1]

DOCS = {
    "d1": "Paris is the capital and largest city of France.",
    "d2": "Berlin is the capital of Germany.",
    "d3": "Vaccines train the immune system to recognise a pathogen.",
    "d4": "The stock market fell sharply on Monday.",
    "d5": "Fever, cough and fatigue are common flu symptoms.",
    "d6": "France is a country in western Europe with Paris as its capital.",
}
QUERIES = {"q1": "capital of france", "q2": "how do vaccines work", "q3": "flu symptoms"}


def write_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    with gzip.open(root / "corpus.jsonl.gz", "wt") as fh:
        for i, t in DOCS.items():
            fh.write(json.dumps({"_id": i, "title": "", "text": t}) + "\n")
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items())
    )
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\nq3\td5\t1\n")
    return root


@pytest.fixture
def tiny_setup(tiny_ce_factory, tmp_path):
    ce = tiny_ce_factory(layers=3, max_length=64)
    ce.save(tmp_path / "model")
    return tmp_path / "model", write_beir(tmp_path / "beir"), tmp_path / "out"


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_cli_writes_every_table_with_its_manifest(tiny_setup, capsys):
    model, beir, out = tiny_setup
    code, stdout, _ = run_cli(
        [
            "--model",
            str(model),
            "--collection",
            str(beir),
            "--queries",
            "2",
            "--depth",
            "3",
            "--layers",
            "1-2",
            "--heads",
            "0,3",
            "--flow-pairs",
            "2",
            "--attribution-pairs",
            "2",
            "--ig-steps",
            "8",
            "--max-length",
            "64",
            "--seed",
            "7",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0
    assert "query2doc" in stdout and "rollout_cls_from_doc" in stdout and "wrote" in stdout
    flows = read_table(out, "flows")
    assert list(flows.columns) == FLOW_COLUMNS
    from ablations.data.collections import load_collection

    rs = load_collection(str(beir)).subset(2, 3)
    n_pairs = len(rs.candidates)
    assert n_pairs >= 3 and rs.candidates["query_id"].nunique() == 2
    assert len(flows) == n_pairs * 2 * 2 * 5 * 6  # pairs × layers × heads × sources × targets
    assert sorted(flows["layer"].unique()) == [1, 2] and sorted(flows["head"].unique()) == [0, 3]
    assert not flows["value"].isna().any()
    sums = (
        flows[flows.target != "sep"].groupby(["query_id", "doc_id", "layer", "head", "source"])["value"].sum()
    )
    np.testing.assert_allclose(sums, 1.0, atol=1e-5)
    meta = read_manifest(out, "flows")
    assert meta["model"] == str(model) and meta["seed"] == 7 and meta["git_revision"]
    assert meta["collection"]["name"] == "beir" and meta["collection"]["queries"] == 2
    assert meta["settings"]["layers"] == [1, 2] and meta["settings"]["heads"] == [0, 3]
    assert meta["settings"]["max_length"] == 64
    per_query = read_table(out, "flows_per_query")
    assert set(per_query["query_id"]) == set(rs.candidates["query_id"])
    assert per_query["pairs"].sum() == n_pairs * 2 * 2 * 5 * 6
    summary = read_table(out, "flows_summary")
    assert {"mean", "std", "count", "query_mean", "query_std", "queries"} <= set(summary.columns)
    assert (summary["count"] == n_pairs).all() and (summary["queries"] == 2).all()
    rollout = read_table(out, "rollout")
    assert set(rollout["method"]) == {"rollout", "flow"}
    assert rollout[rollout.method == "rollout"].groupby(["query_id", "doc_id"]).size().eq(3 * 5).all()
    assert rollout[rollout.method == "flow"][["query_id", "doc_id"]].drop_duplicates().shape[0] == 2
    np.testing.assert_allclose(
        rollout.groupby(["method", "query_id", "doc_id", "layer"])["value"].sum(), 1.0, atol=1e-5
    )
    attributions = read_table(out, "attributions")
    assert set(attributions["role"]) == set(FLOW_ROLES) and len(attributions) == 2 * 5
    assert {"delta", "score", "baseline_score"} <= set(attributions.columns)
    tokens = read_table(out, "attribution_tokens")
    assert {"token", "position", "role", "attribution"} <= set(tokens.columns)
    scores = read_table(out, "scores")
    ce = CrossEncoder.from_pretrained(model, max_length=64)
    np.testing.assert_allclose(scores["score"], ce.score(rs.pairs()), rtol=1e-5, atol=1e-6)


def test_slow_parts_can_be_skipped(tiny_setup, capsys):
    model, beir, out = tiny_setup
    code, _, _ = run_cli(
        [
            "--model",
            str(model),
            "--collection",
            str(beir),
            "--queries",
            "1",
            "--depth",
            "2",
            "--no-rollout",
            "--flow-pairs",
            "0",
            "--no-attributions",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0
    assert sorted(p.stem for p in out.glob("*.parquet")) == [
        "flows",
        "flows_per_query",
        "flows_summary",
        "scores",
    ]


def test_both_backends_write_the_same_flows(tiny_setup, capsys, tmp_path):
    model, beir, _ = tiny_setup
    common = [
        "--model",
        str(model),
        "--collection",
        str(beir),
        "--queries",
        "2",
        "--depth",
        "2",
        "--flow-pairs",
        "1",
        "--no-attributions",
    ]
    for backend in ("hf", "transformer_lens"):
        code, _, _ = run_cli([*common, "--backend", backend, "--out", str(tmp_path / backend)], capsys)
        assert code == 0
    for table in ("flows", "rollout", "scores"):
        hf, tl = read_table(tmp_path / "hf", table), read_table(tmp_path / "transformer_lens", table)
        value = "score" if table == "scores" else "value"
        assert hf.drop(columns=value).equals(tl.drop(columns=value))
        np.testing.assert_allclose(tl[value], hf[value], rtol=1e-5, atol=1e-6)
    assert read_manifest(tmp_path / "transformer_lens", "flows")["settings"]["backend"] == "transformer_lens"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--layers", "3"], "error: layer 3 is out of range; this model has layers 0-2"),
        (["--heads", "0-9"], "error: head 4 is out of range; this model has heads 0-3"),
        (["--layers", "x"], "error: malformed layers range 'x'"),
        (["--queries", "0"], "error: --queries 0 must be >= 1"),
        (["--flow-pairs", "-1"], "error: --flow-pairs -1 must be >= 0"),
        (["--collection", "nope"], "error: unknown collection 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_setup, capsys, extra, message):
    model, beir, out = tiny_setup
    argv = ["--model", str(model), "--collection", str(beir), "--out", str(out), *extra]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1
    assert not out.exists()


def test_a_model_without_hookable_attention_fails_cleanly(tmp_path, tokenizer):
    """A DeBERTa-v2 classifier loads in transformers but its attention cannot be intercepted: one line on
    stderr naming the family and why, exit 2, nothing written (real process)."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    cfg = DebertaV2Config(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
    )
    torch.manual_seed(0)
    DebertaV2ForSequenceClassification(cfg).save_pretrained(tmp_path / "distil")
    tokenizer.save_pretrained(tmp_path / "distil")
    beir = write_beir(tmp_path / "beir")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "probe.run",
            "--model",
            str(tmp_path / "distil"),
            "--collection",
            str(beir),
            "--max-length",
            "64",
            "--out",
            str(tmp_path / "out"),
        ],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: model family 'deberta-v2' is not supported: DeBERTa's disentangled")
    assert not (tmp_path / "out").exists()


def test_help_documents_every_option():
    proc = subprocess.run(
        [sys.executable, "-m", "probe.run", "--help"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0
    for action in build_parser()._actions:
        for opt in action.option_strings:
            assert opt in proc.stdout
        assert action.help and len(action.help) > 8
    for table in (
        "flows",
        "flows_per_query",
        "flows_summary",
        "rollout",
        "attributions",
        "attribution_tokens",
        "scores",
    ):
        assert table in proc.stdout


def test_config_round_trips_through_json():
    cfg = ProbeConfig(model="m", queries=3, layers="0-2")
    assert ProbeConfig(**json.loads(json.dumps(cfg.__dict__))) == cfg


# ------------------------------------------------------------------- real model
def real_scorer() -> tuple[CrossEncoder, str]:
    """The reference cross-encoder; before it exists, the real MiniLM-L6 encoder with a seeded fresh head."""
    from ablations.paths import resolve_model
    from probe.errors import BadInput

    try:
        path = resolve_model("reference")
        return CrossEncoder.from_pretrained(path), path
    except BadInput:
        torch.manual_seed(0)
        path = resolve_model("minilm-l6")
        return CrossEncoder.from_pretrained(path, new_head=True), path + " (fresh head, seed 0)"


@pytest.mark.slow
def test_real_model_flow_table_for_20_queries(tmp_path):
    scorer, name = real_scorer()
    cfg = ProbeConfig(
        model=name,
        collection="dl19",
        queries=20,
        depth=2,
        flow_pairs=1,
        attribution_pairs=2,
        ig_steps=32,
        out=str(tmp_path),
    )
    tables = probe(cfg, scorer=scorer)
    flows = tables["flows"]
    assert flows["query_id"].nunique() == 20 and len(flows[["query_id", "doc_id"]].drop_duplicates()) == 40
    assert len(flows) == 40 * scorer.num_layers * scorer.num_heads * 5 * 6
    assert not flows["value"].isna().any() and flows["value"].between(0, 1 + 1e-5).all()
    real = flows[flows.target != "sep"]
    sums = real.groupby(["query_id", "doc_id", "layer", "head", "source"])["value"].sum()
    np.testing.assert_allclose(sums, 1.0, atol=1e-4)
    cls = real[real.source == "cls"].groupby(["query_id", "doc_id", "layer", "head"])["value"].sum()
    np.testing.assert_allclose(cls, 1.0, atol=1e-4)  # the CLS row sums to 1
    # plausible, i.e. not uniform: document tokens dump attention on a sink (CLS in MiniLM, SEP in BERT-base)
    # far above its token share (~1/70), and query tokens look at the document in some layer
    by_layer = flows.groupby(["layer", "source", "target"])["value"].mean()
    sink = max(by_layer.xs(("doc", t), level=("source", "target")).max() for t in ("cls", "sep"))
    assert sink > 0.1
    assert by_layer.xs(("query", "doc"), level=("source", "target")).max() > 0.1
    # rollout shares are distributions and CLS keeps drawing on the document
    rollout = tables["rollout"]
    np.testing.assert_allclose(
        rollout.groupby(["method", "query_id", "doc_id", "layer"])["value"].sum(), 1.0, atol=1e-4
    )
    assert rollout[(rollout.method == "rollout") & (rollout.role == "doc")]["value"].mean() > 0.05
    attributions = tables["attributions"]
    gap = (attributions["score"] - attributions["baseline_score"]).abs()
    assert (attributions["delta"].abs() <= 0.1 * gap + 0.01).all()  # completeness, up to 32-step quadrature
    assert isinstance(pd.read_parquet(tmp_path / "flows.parquet"), pd.DataFrame)
    assert read_manifest(tmp_path, "flows")["collection"]["queries"] == 20
