"""Every tool on the real 12-layer reference (``cross-encoder/ms-marco-MiniLM-L-12-v2`` de-quantized, in
``../shared/models``): per-head masks up to head 11, layer ranges up to 11, depth-aware MICE presets, and
one-line refusals of a head 12 or a configuration made for 6 layers."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_ablation_support import run_cli

from ablations.mice.config import MiceConfig, preset
from ablations.paths import REFERENCE_MODEL, resolve_model, shared_dir
from ablations.scorers import model_depth

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shared_dir() / "models" / REFERENCE_MODEL / "config.json").is_file(),
        reason=f"{REFERENCE_MODEL} is not in $MICE_SHARED/models",
    ),
]


def one_line_error(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err


def test_reference_is_the_12_layer_ms_marco_cross_encoder():
    path = resolve_model("reference")
    assert path.endswith(REFERENCE_MODEL) and model_depth("reference") == 12
    assert (
        json.loads((shared_dir() / "models" / REFERENCE_MODEL / "config.json").read_text())[
            "num_attention_heads"
        ]
        == 12
    )


def test_per_head_rules_reach_the_last_layer_and_head(tmp_path):
    out = tmp_path / "run"
    args = ["--remove", "doc2query:8-11:11", "--remove", "cls2doc:11", "--queries", "2", "--depth", "5"]
    res = run_cli("ablations.run", [*args, "--out", str(out), "--no-progress"], tmp_path / "c", timeout=600)
    assert res.returncode == 0, res.stderr
    assert "the model has" not in res.stdout  # nothing clamped on 12 layers
    summary = pd.read_parquet(out / "summary.parquet")
    assert (summary["spec_label"] == "doc2query[8-11]{h11} + cls2doc[11]").all()
    assert (summary["first_layer"] == 8).all() and (summary["n_queries"] == 2).all()
    bad = run_cli(
        "ablations.run",
        ["--remove", "doc2query", "--heads", "12", "--out", str(tmp_path / "bad"), "--no-progress"],
        tmp_path / "c",
    )
    one_line_error(bad, "'12'", "head 11", "12 heads")
    assert not (tmp_path / "bad").exists()


def test_export_is_depth_aware_and_a_6_layer_configuration_is_refused(tmp_path):
    res = run_cli(
        "ablations.export",
        ["--from", "mice-final", "--out", str(tmp_path / "m12" / "mice.json")],
        tmp_path / "c",
    )
    assert res.returncode == 0, res.stderr
    cfg = MiceConfig.load(tmp_path / "m12")
    assert (cfg.num_layers, cfg.merge_layer, cfg.drop_layer) == (12, 4, 7)  # the paper's MICE-ℓ4+3
    six = preset("mice-l2+3", 6, 12, "reference")
    six.save(tmp_path / "m6" / "mice.json")
    out = tmp_path / "ev"
    bad = run_cli(
        "ablations.evaluate",
        ["--model", str(tmp_path / "m6" / "mice.json"), "--queries", "1", "--depth", "5", "--out", str(out)],
        tmp_path / "c",
    )
    one_line_error(bad, "6 layers", "12 × 12")
    assert not out.exists()
    bad = run_cli(
        "ablations.run",
        ["--spec", str(tmp_path / "m6" / "mice.json"), "--queries", "1", "--out", str(tmp_path / "r6")],
        tmp_path / "c",
    )
    one_line_error(bad, "made for 6 layers × 12 heads", "12 layers × 12 heads")
    assert not (tmp_path / "r6").exists()


def test_probe_captures_the_upper_layers(tmp_path):
    out = tmp_path / "probe"
    args = ["--queries", "2", "--depth", "3", "--layers", "10-11", "--flow-pairs", "0", "--no-attributions"]
    res = run_cli("probe.run", [*args, "--out", str(out)], tmp_path / "c", timeout=600)
    assert res.returncode == 0, res.stderr
    flows = pd.read_parquet(out / "flows.parquet")
    assert sorted(flows["layer"].unique()) == [10, 11] and sorted(flows["head"].unique()) == list(range(12))
    rollout = pd.read_parquet(out / "rollout.parquet")
    assert rollout["layer"].max() == 11
