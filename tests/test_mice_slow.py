"""MICE on the real reference cross-encoder (12-layer MS MARCO MiniLM from ../shared/models; the real
MiniLM-L6 encoder with a fresh head where it is absent) and real TREC DL pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ablations.data.collections import load_collection
from ablations.masking.masked import MaskedCrossEncoder
from ablations.masking.masks import MaskSpec, Rule
from ablations.mice.config import preset
from ablations.mice.model import MiceModel
from ablations.mice.plan import PlanExecutor, compile_plan
from ablations.paths import resolve_model
from ablations.training.retrain import RetrainConfig, retrain
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


@pytest.fixture(scope="module")
def real_pairs():
    rs = load_collection("dl19").subset(2, 6)
    return rs.pairs()


@pytest.mark.parametrize(
    "name,positions",
    [
        ("mice-l2+3", "canonical"),
        ("mice-step3@2", "joint"),
        ("mice-step2", "canonical"),
        ("mice-l3+2", "canonical"),
        ("mice-final", "canonical"),
    ],
)
def test_every_plan_shape_is_exact_on_the_real_model(real_model, real_pairs, name, positions):
    ce = CrossEncoder.from_pretrained(real_model)
    cfg = preset(
        name, ce.num_layers, ce.num_heads, real_model, doc_positions=positions, max_length=ce.max_length
    )
    plan = compile_plan(cfg)
    ex = PlanExecutor(ce, cfg, plan)
    batch = ex.encode(real_pairs)
    with torch.inference_mode():
        ref = ex.forward(batch, "masked")
        for shape in plan.valid:
            assert (ex.forward(batch, shape) - ref).abs().max() < 1e-4, shape
    assert len(plan.valid) >= 2


def test_masked_plan_is_the_masked_cross_encoder_on_the_real_model(real_model, real_pairs):
    ce = CrossEncoder.from_pretrained(real_model)
    spec = MaskSpec([Rule("mice-step2"), Rule("query2doc", "0-1")])
    from ablations.mice.config import MiceConfig

    cfg = MiceConfig(
        real_model, ce.num_layers, ce.num_heads, mask=spec, doc_positions="joint", max_length=ce.max_length
    )
    got = MiceModel(ce, cfg, plan="split").score(real_pairs)
    want = MaskedCrossEncoder(ce, spec).score(real_pairs)
    assert np.abs(got - want).max() < 1e-4


def test_document_index_on_the_real_model(real_model, real_pairs, tmp_path):
    ce = CrossEncoder.from_pretrained(real_model)
    mice = MiceModel(
        ce, preset("mice-l2+3", ce.num_layers, ce.num_heads, real_model, max_length=ce.max_length)
    )
    online = mice.score(real_pairs)
    index = mice.build_index([d for _, d in real_pairs], tmp_path / "idx.safetensors")
    assert index.bytes_per_token == 3 * 2 * ce.model.config.hidden_size * 4  # layers 2-4, K and V, float32
    assert np.abs(mice.score(real_pairs, batch_size=100) - online).max() < 1e-4


def test_retraining_a_few_steps_on_real_pairs_lowers_the_loss(real_model, tmp_path):
    ce = CrossEncoder.from_pretrained(real_model)
    # the paper's final architecture at the model's own depth: mice-l4+3 on the 12-layer reference
    ce_cfg = preset("mice-final", ce.num_layers, ce.num_heads, real_model, max_length=128)
    ce_cfg.save(tmp_path / "mice.json")
    cfg = RetrainConfig(
        out=str(tmp_path / "out"),
        config=str(tmp_path / "mice.json"),
        loss="lce",
        train_collections=["dl21"],
        validation="dl21",
        steps=6,
        lr=1e-4,
        group_size=4,
        groups_per_step=2,
        eval_every=0,
        checkpoint_every=100,
        max_doc_length=64,
    )
    summary = retrain(cfg, progress=False)
    fb = summary["fixed_batch_loss"]
    assert fb["after"] < fb["before"], fb
    assert MiceModel.load(tmp_path / "out").plan.shape == "doc-cache"
