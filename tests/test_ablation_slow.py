"""The real CLI path on the reference cross-encoder (the 12-layer MS MARCO MiniLM from ../shared/models; the
real MiniLM-L6 encoder with a fresh head where it is absent) and TREC DL 2019."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_ablation_support import run_cli

from ablations.data.collections import load_collection
from ablations.masking.masked import MaskedCrossEncoder
from ablations.masking.masks import MaskSpec, compile_mask
from ablations.masking.prefix import PrefixCache
from ablations.paths import resolve_model
from ablations.scorers import model_depth
from probe.errors import BadInput
from probe.model import CrossEncoder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_model(tmp_path_factory) -> str:
    """The reference cross-encoder, or (not trained here) the real MiniLM encoder with a seeded fresh head."""
    try:
        return resolve_model("reference")
    except BadInput:
        path = tmp_path_factory.mktemp("real") / "minilm-fresh-head"
        torch.manual_seed(0)
        CrossEncoder.from_pretrained(resolve_model("minilm-l6"), new_head=True).save(path)
        return str(path)


def test_real_cli_run_on_dl19(real_model, tmp_path):
    out = tmp_path / "out"
    args = [
        "--remove",
        "doc2query",
        "--layers",
        "0-6",
        "--model",
        real_model,
        "--queries",
        "3",
        "--depth",
        "10",
        "--out",
        str(out),
        "--bootstrap",
        "1000",
    ]
    res = run_cli("ablations.run", args, tmp_path / "cache", timeout=600)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    n = model_depth(real_model)
    last = min(6, n - 1)
    if n <= 6:
        assert lines[0] == f"layers 0-6 → 0-{last}: the model has {n} layers"
    else:  # the 12-layer reference: 0-6 is in range, nothing clamped
        assert not any("the model has" in line for line in lines), res.stdout
    assert "collection dl19: 3 queries, 30 pairs (depth 10)" in res.stdout
    summary = pd.read_parquet(out / "summary.parquet")
    assert list(summary["measure"]) == ["nDCG@10", "RR(rel=2)@10", "R(rel=2)@100"]
    assert (summary["layers"] == f"0-{last}").all() and (summary["collection"] == "dl19").all()
    per_query = pd.read_parquet(out / "per_query.parquet")
    assert len(per_query) == 9 and per_query["value"].between(0, 1).all()
    assert "baseline   computed" in res.stdout
    again = run_cli("ablations.run", [*args, "--force"], tmp_path / "cache", timeout=600)
    assert again.returncode == 0 and "baseline   cached" in again.stdout


def test_real_sweep_and_prefix_cache(real_model, tmp_path):
    out = tmp_path / "sweep"
    n = model_depth(real_model)
    res = run_cli(
        "ablations.sweep",
        [
            "--interactions",
            "doc2query",
            "--layer-units",
            str(n - 2),
            str(n - 1),
            "--model",
            real_model,
            "--queries",
            "2",
            "--depth",
            "5",
            "--out",
            str(out),
            "--no-progress",
        ],
        tmp_path / "cache",
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    summary = pd.read_parquet(out / "summary.parquet")
    assert sorted(summary["cell_layers"].unique(), key=int) == [str(n - 2), str(n - 1)]


def test_real_encoder_exactness(real_model):
    ce = CrossEncoder.from_pretrained(real_model)
    pairs = load_collection("dl19").subset(2, 6).pairs()
    full = ce.score(pairs, batch_size=4)
    assert np.abs(MaskedCrossEncoder(ce, MaskSpec()).score(pairs, batch_size=4) - full).max() < 1e-5
    cache = PrefixCache(ce, pairs, batch_size=4)
    for spec in (MaskSpec.remove("doc2query", layers="3-5"), MaskSpec.remove("mice-step3")):  # K = depth // 3
        compiled = compile_mask(spec, ce.num_layers, ce.num_heads)
        masked = MaskedCrossEncoder(ce, compiled).score(pairs, batch_size=4)
        assert np.isfinite(masked).all()
        assert np.abs(cache.score(compiled) - masked).max() < 1e-5
