"""A MICE model seen as a cross-encoder: the probe, the ablation runner and attributions accept it and
compute what the MICE model computes (its plans' scores), not the full model's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ablations.experiments.runner import Experiment
from ablations.masking.masks import MaskSpec, Rule
from ablations.masking.prefix import supports_prefix
from ablations.mice.config import MiceConfig, preset
from ablations.mice.model import MiceModel
from ablations.mice.view import MiceCrossEncoder
from ablations.scorers import load_cross_encoder as load_scorer
from probe.attributions import integrated_gradients
from probe.capture import capture, flow_name
from probe.errors import BadInput
from probe.model import model_fingerprint
from probe.roles import FLOW_ROLES

TOL = 1e-4
SMALL = {"max_length": 64, "max_doc_length": 40, "max_query_length": 16}


def _scaled(ce):
    with torch.no_grad():
        ce.model.classifier.weight.mul_(50)  # random tiny BERTs give near-constant scores otherwise
    return ce


@pytest.fixture
def ce(tiny_ce_factory):
    return _scaled(tiny_ce_factory(layers=4))


def _view(ce, name="mice-l1+2", **kw) -> MiceCrossEncoder:
    return MiceCrossEncoder(MiceModel(ce, preset(name, 4, 4, "tiny", **{**SMALL, **kw})))


@pytest.mark.parametrize(
    "name,positions", [("mice-l1+2", "canonical"), ("mice-step2", "canonical"), ("mice-step3@2", "joint")]
)
def test_view_scores_equal_the_mice_plans(ce, pairs, name, positions):
    view = _view(ce, name, doc_positions=positions)
    got = view.score(pairs, batch_size=2)  # length-sorted batches of joint sequences
    plan = view.mice.score(pairs)  # the configuration's cheapest plan (doc-cache / split)
    assert view.mice.plan.shape != "masked"
    assert np.abs(got - plan).max() < TOL and np.std(plan) > 1e-3
    assert view.num_layers == view.config.drop_layer
    full = ce.score(pairs)
    assert np.abs(full - got).max() > 10 * TOL  # the view does not fall back to the full cross-encoder


def test_capture_sees_the_mice_attention(ce, pairs):
    """Flows of removed interactions are exactly zero; the capture's scores are the MICE scores."""
    view = _view(ce)  # documents never read the query; no query↔document before layer 1
    with capture(view, ("flows", "rollout")) as cap:
        scores = cap.score(pairs, batch_size=2)
    assert np.abs(scores - view.mice.score(pairs)).max() < TOL
    cache = cap.cache
    q, d = FLOW_ROLES.index("query"), FLOW_ROLES.index("doc")
    assert cache.layers == list(range(view.num_layers))
    for layer in cache.layers:
        flows = cache[flow_name(layer)]  # (pairs, heads, source, target)
        assert float(flows[:, :, d, q].abs().max()) == 0.0  # documents never read the query
        if layer < 1:
            assert float(flows[:, :, q, d].abs().max()) == 0.0  # no interaction before merge
        else:
            assert float(flows[:, :, q, d].min()) > 0.0  # from merge on, the query reads the document
    with pytest.raises(BadInput, match="hf backend"), capture(view, ("flows",), backend="transformer_lens"):
        pass


def test_runner_adds_removals_to_the_mice_mask(ce, pairs, tmp_path, monkeypatch):
    """The runner's baseline is the MICE model; a removal gives the scores of the MICE configuration with
    that removal added, computed by its own (doc-cache) plan."""
    from ablations.data.collections import RerankSet

    monkeypatch.setenv("MICE_CACHE", str(tmp_path))
    with torch.no_grad():
        ce.model.classifier.weight.mul_(
            100
        )  # one layer's removal on a random tiny BERT moves scores by ~1e-4
    view = _view(ce)
    queries = list(dict.fromkeys(q for q, _ in pairs))
    qid = {q: f"q{i}" for i, q in enumerate(queries)}
    cand = pd.DataFrame(
        {
            "query_id": [qid[q] for q, _ in pairs],
            "doc_id": [f"d{i}" for i in range(len(pairs))],
            "rank": [1, 2, 1, 2, 1],
            "score": [5.0, 4.0, 5.0, 4.0, 5.0],
        }
    )
    rs = RerankSet(
        "tiny",
        {qid[q]: q for q in queries},
        {f"d{i}": d for i, (_, d) in enumerate(pairs)},
        cand,
        pd.DataFrame({"query_id": ["q0", "q1", "q2"], "doc_id": ["d0", "d2", "d4"], "relevance": [1] * 3}),
    )
    exp = Experiment(view, rs)
    assert not exp.use_prefix and not supports_prefix(view)
    assert np.abs(exp.baseline - view.mice.score(rs.pairs())).max() < TOL
    removal = MaskSpec([Rule("query2doc", "1")])
    got = exp.scores(exp.compile(removal))
    cfg = view.config
    joined = MiceConfig(
        cfg.base_model,
        cfg.num_layers,
        cfg.num_heads,
        MaskSpec([*cfg.mask.rules, *removal.rules]),
        cfg.merge_layer,
        cfg.drop_layer,
        **SMALL,
    )
    expected = MiceModel(ce, joined).score(rs.pairs())
    assert MiceModel(ce, joined).plan.shape == "doc-cache"
    assert np.abs(got - expected).max() < TOL and np.abs(got - exp.baseline).max() > 1e-3
    with pytest.raises(BadInput, match="beyond the last layer 2: the model has 3 layers"):
        exp.compile(MaskSpec([Rule("query2doc", "3")]))  # drop_layer 3: layers 0-2 run
    assert model_fingerprint(view) != model_fingerprint(ce)  # same weights, another function


def test_integrated_gradients_on_the_mice_forward(ce, pairs):
    view = _view(ce)
    _, info = integrated_gradients(view, pairs[:2], n_steps=64, batch_size=2)
    assert np.abs(info["score"].to_numpy() - view.mice.score(pairs[:2])).max() < TOL
    gap = (info["score"] - info["baseline_score"]).abs()
    assert float((info["delta"].abs() / gap.clip(lower=1e-6)).max()) < 0.05  # completeness holds


def test_load_scorer_reads_a_mice_folder(ce, tmp_path):
    view = _view(ce)
    folder = view.save(tmp_path / "mice")
    loaded = load_scorer(str(folder))
    assert isinstance(loaded, MiceCrossEncoder) and loaded.config == MiceConfig.load(folder)
    assert isinstance(load_scorer(str(folder / "mice.json")), MiceCrossEncoder)
    with pytest.raises(BadInput, match="--max-length 32 does not apply to the MICE model"):
        load_scorer(str(folder), max_length=32)
