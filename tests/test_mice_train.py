"""Retraining loop (MICE student and late-interaction baselines) on tiny BERTs: loss goes down, resume is
exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_bert

from ablations.data.training import Group
from ablations.mice.config import preset
from ablations.mice.late_interaction import LateInteractionScorer
from ablations.mice.model import MiceModel
from ablations.training.retrain import RetrainConfig, retrain
from probe.errors import BadInput
from probe.model import CrossEncoder

SMALL = {"max_length": 64, "max_doc_length": 40, "max_query_length": 16}


@pytest.fixture
def setup(tokenizer, pairs, tmp_path):
    """A tiny cross-encoder on disk, its MICE configuration, and teacher-scored groups of real texts."""
    ce = CrossEncoder(make_tiny_bert(tokenizer, layers=3), tokenizer, max_length=64, name="tiny")
    with torch.no_grad():  # a random tiny BERT scores every pair alike; a larger head breaks the tie sooner
        ce.model.classifier.weight.mul_(50)
    ce.save(tmp_path / "ce")
    cfg = preset("mice-l1+2", 3, 4, str(tmp_path / "ce"), **SMALL)
    cfg.save(tmp_path / "mice.json")

    def teacher(q, d):  # a lexical teacher: word overlap, so the margins to learn are real (0 to 3)
        return float(len(set(q.lower().split()) & set(d.lower().rstrip(".").split())))

    docs = [d for _, d in pairs] + ["An unrelated sentence about trains.", "Cooking pasta takes ten minutes."]
    groups = []
    for i, q in enumerate(dict.fromkeys(q for q, _ in pairs)):
        for g in range(3):
            chosen = [docs[(i + g + k) % len(docs)] for k in range(4)]
            groups.append(Group(q, chosen, teacher=[teacher(q, d) for d in chosen]))
    return tmp_path, groups


def _cfg(tmp_path, out, **kw) -> RetrainConfig:
    # fp32: a random tiny BERT scores every pair almost alike, and its gradients are small enough for bfloat16
    # rounding to swamp them; on the real model bf16 and fp32 gradients agree (tests/test_mice_slow.py trains
    # in auto)
    base = dict(
        bf16="off",
        out=str(tmp_path / out),
        config=str(tmp_path / "mice.json"),
        steps=20,
        lr=1e-2,
        head_lr=1e-2,
        groups_per_step=2,
        group_size=4,
        eval_every=0,
        checkpoint_every=4,
        max_doc_length=40,
    )
    return RetrainConfig(**{**base, **kw})


def test_mice_retraining_lowers_the_loss_and_loads(setup, pairs):
    tmp_path, groups = setup
    summary = retrain(_cfg(tmp_path, "mice"), groups=groups, progress=False)
    fb = summary["fixed_batch_loss"]
    assert fb["after"] < 0.9 * fb["before"], fb
    assert len(summary["losses"]) == 20 and summary["parameters"] > 0
    model = MiceModel.load(tmp_path / "mice")  # the output folder is a MICE model
    before = MiceModel.load(tmp_path / "mice.json")
    assert model.plan.shape == before.plan.shape == "doc-cache"
    assert np.abs(model.score(pairs) - before.score(pairs)).max() > 1e-4  # the weights moved
    again = retrain(_cfg(tmp_path, "mice"), groups=groups, progress=False)  # finished: not redone
    assert again["fixed_batch_loss"] == fb


def test_resume_after_interruption_gives_the_same_model(setup, pairs):
    tmp_path, groups = setup
    retrain(_cfg(tmp_path, "straight"), groups=groups, progress=False)
    first = retrain(_cfg(tmp_path, "resumed"), groups=groups, progress=False, stop_after=5)
    assert first == {"interrupted": True, "step": 5}
    retrain(_cfg(tmp_path, "resumed"), groups=groups, progress=False)
    a = MiceModel.load(tmp_path / "straight").score(pairs)
    b = MiceModel.load(tmp_path / "resumed").score(pairs)
    assert np.abs(a - b).max() < 1e-5
    with pytest.raises(BadInput, match="different settings"):
        retrain(_cfg(tmp_path, "other"), groups=groups, progress=False, stop_after=2)
        retrain(_cfg(tmp_path, "other", lr=1e-4), groups=groups, progress=False)


def test_cls_distillation_brings_the_students_cls_states_to_the_teachers(setup, tokenizer, pairs):
    """``cls_weight``: the MICE student also learns the teacher's final [CLS] states. The student starts
    from another random model's weights, far from the teacher's states; with the feature loss it moves
    much closer to them than with the score margins alone."""
    from ablations.training.retrain import TeacherStates

    tmp_path, groups = setup
    CrossEncoder(make_tiny_bert(tokenizer, layers=3, seed=7), tokenizer, max_length=64, name="o").save(
        tmp_path / "other"
    )
    teacher = TeacherStates(CrossEncoder.from_pretrained(str(tmp_path / "ce")))

    def distance(model: MiceModel) -> float:
        ex = model.executor
        model.ce.model.eval()
        with torch.no_grad():
            states = ex.forward(ex.encode(pairs), "split", head=False)
        return float(torch.nn.functional.mse_loss(states, teacher(pairs)))

    before = distance(MiceModel.load(tmp_path / "mice.json", weights=str(tmp_path / "other")))
    common = dict(teacher=str(tmp_path / "ce"), init=str(tmp_path / "other"), steps=30, lr=3e-3)
    retrain(_cfg(tmp_path, "cls", cls_weight=10.0, **common), groups=groups, progress=False)
    retrain(_cfg(tmp_path, "scores", **common), groups=groups, progress=False)
    with_cls = distance(MiceModel.load(tmp_path / "cls"))
    scores_only = distance(MiceModel.load(tmp_path / "scores"))
    assert with_cls < 0.5 * before and with_cls < 0.5 * scores_only, (before, with_cls, scores_only)


def test_cls_distillation_needs_a_mice_student_and_a_teacher(tmp_path):
    with pytest.raises(BadInput, match="no \\[CLS\\] head"):
        RetrainConfig(out=str(tmp_path), config="x", student="maxsim", cls_weight=1.0)
    with pytest.raises(BadInput, match="needs the teacher"):
        RetrainConfig(out=str(tmp_path), config="x", loss="lce", cls_weight=1.0)
    with pytest.raises(BadInput, match=">= 0"):
        RetrainConfig(out=str(tmp_path), config="x", cls_weight=-1.0)


@pytest.mark.parametrize("kind", ["maxsim", "lite"])
def test_late_interaction_baselines_train_with_the_same_loop(setup, pairs, kind):
    tmp_path, groups = setup
    summary = retrain(_cfg(tmp_path, kind, student=kind, steps=20), groups=groups, progress=False)
    fb = summary["fixed_batch_loss"]
    assert fb["after"] < fb["before"], fb
    model = LateInteractionScorer.load(tmp_path / kind)
    assert model.module.kind == kind and model.score(pairs).shape == (len(pairs),)


def test_late_interaction_scores_index_and_maxsim_formula(tokenizer, pairs, tmp_path):
    ce = CrossEncoder(make_tiny_bert(tokenizer, layers=2), tokenizer, max_length=64, name="tiny")
    for kind in ("maxsim", "lite"):
        li = LateInteractionScorer.from_cross_encoder(ce, kind, max_doc_length=40, max_query_length=16)
        online = li.score(pairs)
        index = li.build_index([d for _, d in pairs], tmp_path / f"{kind}.safetensors")
        assert index.bytes_per_token == 128 * 4
        assert np.abs(li.score(pairs) - online).max() < 1e-5
        li.detach_index()
        li.attach_index(tmp_path / f"{kind}.safetensors")
        assert np.abs(li.score(pairs) - online).max() < 1e-5
        folder = li.save(tmp_path / f"{kind}-model")
        assert np.abs(LateInteractionScorer.load(folder).score(pairs) - online).max() < 1e-5
        if kind == "maxsim":  # Σ over query tokens of the max cosine over document tokens
            with torch.no_grad():
                q, qm = li.encode_queries([pairs[0][0]])
                d, dm = li.encode_docs([pairs[0][1]])
                manual = (q[0, : int(qm.sum())] @ d[0, : int(dm.sum())].T).max(1).values.sum()
            assert abs(float(manual) - online[0]) < 1e-5
    other = LateInteractionScorer.from_cross_encoder(
        ce, "lite", seed=3, max_doc_length=40, max_query_length=16
    )
    with pytest.raises(BadInput, match="built by another model"):
        other.attach_index(tmp_path / "lite.safetensors")


def test_late_interaction_encoder_keeps_the_backbones_first_layers(tokenizer, pairs, tmp_path):
    """``encoder_layers=N``: the token states are the cross-encoder's states after its layer N (same weights),
    the depth survives save/load, and a full-depth encoder's settings (so fingerprints) are unchanged."""
    ce = CrossEncoder(make_tiny_bert(tokenizer, layers=3), tokenizer, max_length=64, name="tiny")
    li = LateInteractionScorer.from_cross_encoder(ce, "maxsim", encoder_layers=2, max_doc_length=40)
    assert li.module.encoder.config.num_hidden_layers == 2 and li.settings()["encoder_layers"] == 2
    enc = ce.tokenizer([pairs[0][1]], return_tensors="pt")
    base = getattr(ce.model, ce.model.base_model_prefix).eval()
    li.module.eval()
    with torch.no_grad():
        want = base(**enc, output_hidden_states=True).hidden_states[2]
        got = li.module.encoder(**enc).last_hidden_state
    assert torch.allclose(got, want, atol=1e-5)
    online = li.score(pairs)
    loaded = LateInteractionScorer.load(li.save(tmp_path / "l2"))
    assert loaded.module.encoder.config.num_hidden_layers == 2 and loaded.settings() == li.settings()
    assert np.abs(loaded.score(pairs) - online).max() < 1e-5
    full = LateInteractionScorer.from_cross_encoder(ce, "maxsim", encoder_layers=3, max_doc_length=40)
    assert "encoder_layers" not in full.settings()
    assert (
        full.settings()
        == LateInteractionScorer.from_cross_encoder(ce, "maxsim", max_doc_length=40).settings()
    )
    for bad in (0, 4, True):
        with pytest.raises(BadInput, match=f"encoder layers {bad!r}.*expected"):
            LateInteractionScorer.from_cross_encoder(ce, "lite", encoder_layers=bad)


def test_encoder_layers_is_for_late_interaction_students(setup, pairs, tmp_path):
    with pytest.raises(BadInput, match="--encoder-layers 2 is for the maxsim and lite students"):
        RetrainConfig(out=str(tmp_path / "x"), config="x", encoder_layers=2)
    with pytest.raises(BadInput, match="--encoder-layers 0: expected a whole number >= 1"):
        RetrainConfig(out=str(tmp_path / "x"), config="x", student="maxsim", encoder_layers=0)
    root, groups = setup
    summary = retrain(_cfg(root, "l2", student="maxsim", encoder_layers=2), groups=groups, progress=False)
    assert summary["config"]["encoder_layers"] == 2
    assert LateInteractionScorer.load(root / "l2").module.encoder.config.num_hidden_layers == 2
    with pytest.raises(BadInput, match="has 3 layers; expected 1-3"):
        retrain(_cfg(root, "l9", student="maxsim", encoder_layers=9), groups=groups, progress=False)
    assert not (root / "l9").exists()


def test_pseudo_queries_need_the_teacher_and_a_count(tmp_path):
    out = str(tmp_path / "x")
    with pytest.raises(BadInput, match="--pseudo-queries -3: expected a whole number >= 0"):
        RetrainConfig(out=out, config="x", pseudo_queries=-3)
    with pytest.raises(BadInput, match="--pseudo-queries 2.5: expected a whole number >= 0"):
        RetrainConfig(out=out, config="x", pseudo_queries=2.5)
    with pytest.raises(BadInput, match="--pseudo-queries needs the teacher"):
        RetrainConfig(out=out, config="x", pseudo_queries=100, loss="lce")
    # a run without pseudo-queries stores the settings it stored before the option existed (resume)
    from ablations.training.retrain import _settings

    assert "pseudo_queries" not in _settings(RetrainConfig(out=out, config="x"))
    assert _settings(RetrainConfig(out=out, config="x", pseudo_queries=10))["pseudo_queries"] == 10


def test_pseudo_query_groups_join_the_distillation_groups(setup, monkeypatch):
    """The recipe's wiring: with --pseudo-queries N the student trains on the dev-small / in-domain groups
    plus N pseudo-query groups, built on the same pool, exclusions, group size, depth, seed and teacher."""
    import types

    import ablations.data.collections as collections
    import ablations.data.training as td

    root, groups = setup
    calls = {}
    monkeypatch.setattr(
        collections, "load_collection", lambda name: types.SimpleNamespace(queries={"1": "q"})
    )
    monkeypatch.setattr(td, "test_passages", lambda test: ({"t1"}, {"test text"}))
    monkeypatch.setattr(td, "distillation_groups", lambda *a, **kw: groups[:4])

    def pseudo(collections_, **kw):
        calls.update(kw, collections=collections_)
        return groups[4:]

    monkeypatch.setattr(td, "pseudo_query_groups", pseudo)
    cfg = _cfg(root, "pseudo", pseudo_queries=7, steps=2, teacher=str(root / "ce"))
    summary = retrain(cfg, progress=False)
    assert summary["groups"] == len(groups) and summary["config"]["pseudo_queries"] == 7
    assert calls["passages"] == 7 and calls["collections"] == ["dl21"]
    assert (calls["group_size"], calls["depth"], calls["seed"]) == (4, 30, 0)
    assert calls["exclude_docs"] == ({"t1"}, {"test text"}) and calls["teacher"].max_length == 64
