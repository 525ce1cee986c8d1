"""Execution plans on tiny random BERTs: every plan shape equals the masked full forward (the checks of issue
#5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ablations.masking.masked import MaskedCrossEncoder
from ablations.masking.masks import MaskSpec, Rule
from ablations.mice.config import MiceConfig, preset
from ablations.mice.model import MiceModel
from ablations.mice.plan import PlanExecutor, compile_plan
from probe.errors import BadInput

TOL = 1e-4
SMALL = {"max_length": 64, "max_doc_length": 40, "max_query_length": 16}


def _cfg(name_or_spec, layers=4, heads=4, **kw) -> MiceConfig:
    kw = {**SMALL, **kw}
    if isinstance(name_or_spec, str):
        return preset(name_or_spec, layers, heads, "tiny", **kw)
    return MiceConfig("tiny", layers, heads, mask=name_or_spec, **kw)


def _scale_head(ce):
    """Random tiny BERTs give near-constant scores; a larger classifier makes differences visible."""
    with torch.no_grad():
        ce.model.classifier.weight.mul_(50)
    return ce


def _all_shapes(ce, cfg, pairs):
    plan = compile_plan(cfg)
    ex = PlanExecutor(ce, cfg, plan)
    batch = ex.encode(pairs)
    with torch.inference_mode():
        ref = ex.forward(batch, "masked")
        return plan, ref, {s: ex.forward(batch, s) for s in plan.valid}


CASES = [
    ("mice-step2", "canonical", ("masked", "doc-cache")),
    ("mice-step3@2", "joint", ("masked", "split")),
    ("mice-step3@2", "canonical", ("masked", "split", "doc-cache")),
    ("mice-l2+1", "canonical", ("masked", "split", "doc-cache")),
    ("mice-l1+2", "joint", ("masked", "split")),
    ("mice-l3+1", "canonical", ("masked", "split", "doc-cache")),
]


@pytest.mark.parametrize("name,positions,shapes", CASES)
def test_every_plan_shape_equals_the_masked_forward(tiny_ce_factory, pairs, name, positions, shapes):
    ce = _scale_head(tiny_ce_factory(layers=4))
    plan, ref, out = _all_shapes(ce, _cfg(name, doc_positions=positions), pairs)
    assert plan.valid == shapes and plan.shape == shapes[-1]
    assert float(ref.std()) > 1e-3  # the scores differ between pairs, so equality means something
    for shape, scores in out.items():
        assert (scores - ref).abs().max() < TOL, shape


@pytest.mark.parametrize("name", ["mice-step2", "mice-l2+1"])
def test_cls_states_are_what_the_head_reads(tiny_ce_factory, pairs, name):
    """``forward(head=False)`` returns, for every plan shape, the CLS states whose head gives the scores
    (what retraining distils with ``--cls-weight``); with the full model they are the cross-encoder's own."""
    ce = _scale_head(tiny_ce_factory(layers=4))
    cfg = _cfg(name)
    ex = PlanExecutor(ce, cfg, compile_plan(cfg))
    batch = ex.encode(pairs)
    with torch.inference_mode():
        for shape in compile_plan(cfg).valid:
            states = ex.forward(batch, shape, head=False)
            assert states.shape == (len(pairs), ce.model.config.hidden_size)
            assert (ex.head(states) - ex.forward(batch, shape)).abs().max() < TOL, shape
        full = MiceConfig("tiny", 4, 4, doc_positions="joint", **SMALL)
        whole = PlanExecutor(ce, full, compile_plan(full))
        mine = whole.forward(whole.encode(pairs), "masked", head=False)
        theirs = ce.cls_states(ce.encode(pairs))
    assert (mine - theirs).abs().max() < TOL


def test_plans_on_arbitrary_tables(tiny_ce_factory, pairs):
    """Per-layer sets beyond the presets: per-head removals, a merge layer given on top of a mask, a role
    that keeps only itself (the diagonal fallback), a two-label head."""
    ce = _scale_head(tiny_ce_factory(layers=4, num_labels=2))
    specs = [
        MaskSpec([Rule("doc2query+doc2cls+doc2sep1", "all"), Rule("cls2doc", "1-2", heads="0-1")]),
        MaskSpec(
            [Rule("doc2*", "0"), Rule("doc2query+doc2cls+doc2sep1", "all")]
        ),  # doc reads only itself in 0
        MaskSpec([Rule("query2cls", "0-1")]),
    ]
    for spec in specs:
        for merge in (None, 2):
            for positions in ("joint", "canonical"):
                cfg = _cfg(spec, merge_layer=merge, doc_positions=positions)
                plan, ref, out = _all_shapes(ce, cfg, pairs)
                if merge == 2:
                    assert "split" in plan.valid and plan.merge >= 2
                for shape, scores in out.items():
                    assert (scores - ref).abs().max() < TOL, (spec.label, merge, positions, shape)


def test_masked_plan_is_the_masked_cross_encoder(tiny_ce_factory, pairs):
    """Joint positions and no dropped layer: the reference is exactly ablations.masking.masked's masked
    forward (also
    for a document far longer than the pair budget: both cut it the same way)."""
    ce = _scale_head(tiny_ce_factory(layers=3))
    pairs = [*pairs, ("long document", " ".join(f"word{i} topic" for i in range(400)))]
    for spec in (MaskSpec(), MaskSpec([Rule("mice-step3@1")]), MaskSpec([Rule("cls2doc", "2", heads="1")])):
        mice = MiceModel(ce, _cfg(spec, layers=3, doc_positions="joint"), plan="masked")
        want = MaskedCrossEncoder(ce, spec).score(pairs)
        assert np.abs(mice.score(pairs) - want).max() < 1e-5


def test_canonical_reference_is_the_model_with_those_position_ids(tiny_ce_factory, pairs):
    """With canonical positions, the masked plan equals the HF model fed the same tokens and position ids."""
    ce = _scale_head(tiny_ce_factory(layers=3))
    spec = MaskSpec([Rule("mice-step2")])
    cfg = _cfg(spec, layers=3, doc_positions="canonical", doc_position_offset=20)
    ex = PlanExecutor(ce, cfg, compile_plan(cfg, "masked"))
    batch = ex.encode(pairs)
    ids, pos, types, roles, mask = ex._joint_inputs(batch)
    masked = MaskedCrossEncoder(ce, spec)
    from probe.model import PairBatch

    pb = PairBatch(ids, mask, roles, types, list(range(len(pairs))))
    with torch.inference_mode(), masked.applied(pb):
        want = ce.logits_to_scores(
            ce.model(input_ids=ids, attention_mask=mask, token_type_ids=types, position_ids=pos).logits
        )
        got = ex.forward(batch, "masked")
    assert (got - want).abs().max() < 1e-5
    assert int(pos[0, int(batch.q_mask[0].sum())]) == 20  # the first document token sits at the offset


def test_doc_states_do_not_depend_on_the_query(tiny_ce_factory, pairs):
    ce = tiny_ce_factory(layers=4)
    cfg = _cfg("mice-l2+2", doc_positions="canonical")
    ex = PlanExecutor(ce, cfg)
    a = ex.encode([("a short query", d) for _, d in pairs])
    b = ex.encode([("a much longer and completely different question here", d) for _, d in pairs])
    with torch.inference_mode():
        sa = ex.doc_states(a.d_ids, a.d_mask, a.d_roles, a.d_pos).kv
        sb = ex.doc_states(b.d_ids, b.d_mask, b.d_roles, b.d_pos).kv
    assert torch.equal(a.d_pos, b.d_pos) and (sa - sb).abs().max() == 0


def test_dropped_layers_are_not_run(tiny_ce_factory, pairs):
    ce = _scale_head(tiny_ce_factory(layers=4))
    mice = MiceModel(ce, _cfg("mice-l1+1", doc_positions="canonical"))
    before = mice.score(pairs)
    with torch.no_grad():  # scrambling layers 2-3 must not change anything
        for p in ce.model.bert.encoder.layer[2:].parameters():
            p.normal_()
    assert np.abs(mice.score(pairs) - before).max() == 0
    full_params = sum(p.numel() for p in ce.model.parameters())
    layer_params = sum(p.numel() for p in ce.model.bert.encoder.layer[0].parameters())
    assert mice.num_parameters() == full_params - 2 * layer_params


def test_training_gradients_match_between_plans(tiny_ce_factory, pairs):
    """The split plan is the same function as the masked forward, so it trains the same (gradients 1e-5)."""
    ce = _scale_head(tiny_ce_factory(layers=3))
    cfg = _cfg("mice-step3@1", layers=3, doc_positions="canonical")
    mice = MiceModel(ce, cfg)
    grads = {}
    for shape in ("masked", "split", "doc-cache"):
        ce.model.zero_grad()
        mice.train_scores(pairs, shape).square().sum().backward()
        grads[shape] = torch.cat([p.grad.flatten() for p in ce.model.bert.encoder.layer[0].parameters()])
    assert grads["masked"].abs().max() > 0
    for shape in ("split", "doc-cache"):
        assert (grads[shape] - grads["masked"]).abs().max() < 1e-5


def test_invalid_plans_and_mismatched_models_are_refused(tiny_ce_factory):
    ce = tiny_ce_factory(layers=4)
    with pytest.raises(BadInput, match="plan 'doc-cache' does not compute this configuration exactly"):
        compile_plan(_cfg("mice-step1"), "doc-cache")
    with pytest.raises(BadInput, match="positions are joint"):
        compile_plan(_cfg("mice-step2", doc_positions="joint"), "doc-cache")
    with pytest.raises(BadInput, match="interact already in layer 0"):
        compile_plan(_cfg("mice-step2"), "split")
    with pytest.raises(BadInput, match="MICE config is for 6 layers"):
        PlanExecutor(ce, _cfg("mice-step2", layers=6))
    with pytest.raises(BadInput, match="position embeddings"):
        PlanExecutor(ce, _cfg("mice-step2", max_doc_length=300))


def test_rank_api_and_batching(tiny_ce_factory, pairs):
    ce = _scale_head(tiny_ce_factory(layers=4))
    mice = MiceModel(ce, _cfg("mice-l2+2"))
    a = mice.score(pairs, batch_size=1)
    b = mice.score(pairs, batch_size=100)
    assert np.abs(a - b).max() < 1e-5
    ranked = mice.rank(pairs[0][0], [d for _, d in pairs])
    assert sorted(i for i, _ in ranked) == list(range(len(pairs)))
    assert ranked[0][1] == max(s for _, s in ranked)


@pytest.mark.parametrize(
    ("name", "reads"),
    [
        ("mice-l1+1", False),
        ("mice-l3+1", False),
        ("mice-step3@3", False),
        ("mice-l1+2", True),
        ("mice-l2+2", True),
        ("mice-step2", True),
    ],
)
def test_score_reads_document_matches_the_computation(tiny_ce_factory, name, reads):
    """``MiceConfig.score_reads_document`` (attention reachability, what ``ablations.export`` checks) agrees
    with the model: where it says no, one query's scores are identical whatever the document; where yes, they
    differ."""
    torch.manual_seed(0)
    ce = _scale_head(tiny_ce_factory(layers=4))
    cfg = _cfg(name, doc_positions="canonical")
    assert cfg.score_reads_document() is reads
    docs = [
        "Paris is the capital and largest city of France.",
        "Berlin is the capital of Germany.",
        "The stock market fell sharply on Monday.",
        "Vaccines train the immune system.",
    ]
    scores = MiceModel(ce, cfg).score([("what is the capital of france", d) for d in docs])
    spread = float(
        np.ptp(scores)
    )  # random tiny BERTs: spreads of 5e-6..3e-5 where it reads, exactly 0 where not
    assert (spread > 1e-6) if reads else (spread < 1e-8), (name, scores)
