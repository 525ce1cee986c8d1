"""probe.capture: hooks capture exactly the model's attention, change no score, and leave nothing behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.bert.modeling_bert import BertSelfAttention

from probe.capture import (
    CaptureSpec,
    capture,
    flow_name,
    pattern_name,
    rollout_name,
    run_with_cache,
    transformer_lens_bridge,
    transformer_lens_run,
)
from probe.errors import BadInput
from probe.flows import role_flows, role_onehot
from probe.ranges import parse_indices


def eager_outputs(ce, batch):
    """The model's own eager attention with ``output_attentions=True`` (the reference patterns)."""
    ce.model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = ce.model(**batch.model_inputs(), output_attentions=True)
    finally:
        ce.model.set_attn_implementation("sdpa")
    return ce.logits_to_scores(out.logits), out.attentions


def test_captured_patterns_equal_output_attentions(tiny_ce_factory, pairs):
    ce = tiny_ce_factory(layers=3)
    batch = ce.encode(pairs)  # one padded batch: rows of different lengths
    assert int(batch.attention_mask.sum(1).min()) < batch.input_ids.shape[1]
    scores, attentions = eager_outputs(ce, batch)
    with capture(ce, ("pattern",)) as cap:
        captured = cap.forward(batch)
    cache = cap.cache
    assert cache.index == list(range(len(pairs)))
    for layer in range(3):
        pats = cache[pattern_name(layer)]
        for i, n in enumerate(batch.attention_mask.sum(1).tolist()):
            assert pats[i].shape == (4, n, n)
            assert torch.equal(pats[i], attentions[layer][i, :, :n, :n])
    assert torch.equal(captured, scores)


def test_capture_does_not_change_scores(tiny_ce, pairs):
    plain = tiny_ce.score(pairs, batch_size=2)
    batch = tiny_ce.encode(pairs)
    eager, _ = eager_outputs(tiny_ce, batch)
    for what in [("flows",), ("pattern",), ("flows", "rollout"), ("rollout",)]:
        with capture(tiny_ce, what) as cap:
            captured = cap.score(pairs, batch_size=2)
        # the fused kernel the model uses by default differs from eager math by float rounding only
        np.testing.assert_allclose(captured, plain, rtol=1e-5, atol=1e-6)
        assert np.array_equal(np.argsort(-captured), np.argsort(-plain))
        # and the model run with its own eager attention gives bit-identical scores
        with capture(tiny_ce, what) as cap:
            assert torch.equal(cap.forward(batch), eager)


def test_only_selected_layers_and_heads_are_kept(tiny_ce_factory, pairs):
    ce = tiny_ce_factory(layers=4)
    _, cache = run_with_cache(ce, pairs, ("pattern", "flows"), layers="1,3", heads="0-1")
    assert set(cache) == {pattern_name(1), pattern_name(3), flow_name(1), flow_name(3)}
    assert cache.layers == [1, 3] and cache.heads == [0, 1]
    assert cache[flow_name(3)].shape == (len(pairs), 2, 5, 5)
    _, full = run_with_cache(ce, pairs, ("pattern", "flows"))
    # (uncaptured layers keep the fused kernel, so later layers may differ by float rounding)
    for name in cache:
        if "flow" in name:
            torch.testing.assert_close(cache[name], full[name][:, :2], rtol=0, atol=1e-6)
        else:
            for a, b in zip(cache[name], full[name]):
                torch.testing.assert_close(a, b[:2], rtol=0, atol=1e-6)


def test_flows_in_the_hook_equal_flows_from_the_pattern(tiny_ce, pairs):
    _, cache = run_with_cache(tiny_ce, pairs, ("pattern", "flows"), batch_size=2)
    for layer in range(tiny_ce.num_layers):
        for i, roles in enumerate(cache.roles):
            p = cache[pattern_name(layer)][i].unsqueeze(0)
            expect = role_flows(p, role_onehot(roles.unsqueeze(0)))[0]
            torch.testing.assert_close(cache[flow_name(layer)][i], expect, rtol=1e-5, atol=1e-6)


def test_cache_rows_follow_the_pair_order(tiny_ce, pairs):
    _, batched = run_with_cache(tiny_ce, pairs, ("flows", "rollout"), batch_size=2)
    for i, pair in enumerate(pairs):
        _, single = run_with_cache(tiny_ce, [pair], ("flows", "rollout"))
        for layer in range(tiny_ce.num_layers):
            torch.testing.assert_close(
                batched[flow_name(layer)][i], single[flow_name(layer)][0], atol=1e-5, rtol=0
            )
            torch.testing.assert_close(
                batched[rollout_name(layer)][i], single[rollout_name(layer)][0], atol=1e-5, rtol=0
            )


def test_hooks_are_removed_on_exit_even_after_an_error(tiny_ce, pairs):
    impl = tiny_ce.model.config._attn_implementation
    calls = []
    with pytest.raises(RuntimeError, match="boom"), capture(tiny_ce, ("flows",)) as cap:
        cap.context.add_hook(pattern_name(0), lambda t, name: calls.append(name))
        cap.forward(tiny_ce.encode(pairs[:1]))
        raise RuntimeError("boom")
    assert calls == [pattern_name(0)]
    assert tiny_ce.model.config._attn_implementation == impl
    tiny_ce.score(pairs[:1])
    assert calls == [pattern_name(0)]  # the hook no longer runs
    assert all(getattr(m, "_mice_ctx", None) is None for m in tiny_ce.model.modules())
    with pytest.raises(RuntimeError, match="inside `with capture"):
        cap.forward(tiny_ce.encode(pairs[:1]))


def test_capturing_a_pair_twice_is_refused(tiny_ce, pairs):
    with capture(tiny_ce) as cap:
        cap.forward(tiny_ce.encode(pairs[:2]))
        with pytest.raises(ValueError, match="pair index 0 was already captured"):
            cap.forward(tiny_ce.encode(pairs[:2]))
        cap.score(pairs[:2])  # score() numbers its pairs after those already captured
    assert cap.cache.index == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layers": "2"}, r"layer 2 is out of range; this model has layers 0-1"),
        ({"layers": "0-5"}, r"layer 2 is out of range"),
        ({"layers": "1-0"}, r"layer range '1-0' is empty"),
        ({"layers": "one"}, r"layer selection 'one' is malformed"),
        ({"heads": "4"}, r"head 4 is out of range; this model has heads 0-3"),
        ({"heads": [-1]}, r"head -1 is out of range"),
    ],
)
def test_layer_or_head_out_of_range_is_one_clear_error(tiny_ce, kwargs, message):
    with pytest.raises(BadInput, match=message), capture(tiny_ce, ("flows",), **kwargs):
        pass


def test_unknown_capture_kind_is_refused(tiny_ce):
    with (
        pytest.raises(BadInput, match="cannot capture 'scores'; choose from pattern, flows, rollout"),
        capture(tiny_ce, ("scores",)),
    ):
        pass


class FusedSelfAttention(BertSelfAttention):
    """A self-attention that calls a fused kernel directly (no attention interface, no pattern)."""

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
        q, k, v = (
            lin(hidden_states).view(shape).transpose(1, 2) for lin in (self.query, self.key, self.value)
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        return out.transpose(1, 2).reshape(*hidden_states.shape[:-1], -1), None


def test_a_model_that_exposes_no_attention_is_one_clear_error(tiny_ce, pairs):
    layer = tiny_ce.model.bert.encoder.layer[1].attention
    fused = FusedSelfAttention(tiny_ce.model.config)
    fused.load_state_dict(layer.self.state_dict())
    layer.self = fused
    with capture(tiny_ce, ("flows",), layers="0") as cap:  # layer 0 still works
        cap.forward(tiny_ce.encode(pairs[:2]))
    with (
        pytest.raises(BadInput, match="layer 1 of model 'tiny' returned no attention pattern"),
        capture(tiny_ce, ("flows",)) as cap,
    ):
        cap.forward(tiny_ce.encode(pairs[:2]))
    tiny_ce.model.bert.encoder = torch.nn.Identity()
    with (
        pytest.raises(BadInput, match=r"\(bert family\) has no encoder layers"),
        capture(tiny_ce, ("flows",)),
    ):
        pass


def test_capture_spec_round_trips_through_json(tiny_ce):
    import json

    with capture(tiny_ce, ("flows", "rollout"), layers="1", heads="0,2") as cap:
        pass
    spec = CaptureSpec(**json.loads(json.dumps(cap.spec.to_dict())))
    assert spec.to_dict() == {"what": ["flows", "rollout"], "layers": [1], "heads": [0, 2], "backend": "hf"}


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 24).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), min_size=1)))
)
def test_parse_indices_reads_back_written_ranges(case):
    n, chosen = case
    values = sorted(chosen)
    runs, start = [], values[0]
    for prev, cur in zip(values, values[1:] + [None]):
        if cur != prev + 1 if cur is not None else True:
            runs.append(f"{start}-{prev}" if prev > start else str(start))
            start = cur
    assert parse_indices(",".join(runs), n) == values
    assert parse_indices(values, n) == values
    with pytest.raises(BadInput, match=f"layer {n} is out of range; this model has layers 0-{n - 1}"):
        parse_indices(f"{values[0]},{n}", n)


def test_transformer_lens_bridge_sees_the_same_patterns_and_scores(tiny_ce_factory, pairs):
    ce = tiny_ce_factory(layers=3)
    batch = ce.encode(pairs)
    tl_scores, tl_cache = transformer_lens_run(ce, batch, transformer_lens_bridge(ce))
    with capture(ce, ("pattern",)) as cap:
        scores = cap.forward(batch)
    for layer in range(3):
        ours = cap.cache[pattern_name(layer)]
        theirs = tl_cache[pattern_name(layer)]
        for i, p in enumerate(ours):
            n = p.shape[-1]
            torch.testing.assert_close(theirs[i, :, :n, :n], p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tl_scores, scores, rtol=1e-5, atol=1e-6)
    assert ce.model.config._attn_implementation == "sdpa"  # the bridge works on a copy


def test_transformer_lens_path_refuses_non_bert(tiny_ce):
    tiny_ce.model.config.model_type = "roberta"
    with pytest.raises(BadInput, match="supports BERT models only"):
        transformer_lens_bridge(tiny_ce)


@pytest.mark.slow
def test_real_encoder_capture_matches_output_attentions_and_scores():
    from ablations.data.collections import load_collection
    from ablations.paths import resolve_model
    from probe.model import CrossEncoder

    torch.manual_seed(0)
    ce = CrossEncoder.from_pretrained(resolve_model("minilm-l6"), new_head=True)
    pairs = load_collection("dl19").subset(2, 3).pairs()
    batch = ce.encode(pairs)
    plain = ce.score(pairs)
    eager, attentions = eager_outputs(ce, batch)
    with capture(ce, ("pattern", "flows")) as cap:
        captured = cap.forward(batch)
    assert torch.equal(captured, eager)
    np.testing.assert_allclose(captured.numpy(), plain, rtol=1e-5, atol=1e-5)
    for layer in range(ce.num_layers):
        for i, p in enumerate(cap.cache[pattern_name(layer)]):
            n = p.shape[-1]
            assert torch.equal(p, attentions[layer][i, :, :n, :n])
        torch.testing.assert_close(
            cap.cache[flow_name(layer)].sum(-1), torch.ones(len(pairs), ce.num_heads, 5), rtol=0, atol=1e-5
        )


def test_transformer_lens_backend_fills_the_same_cache(tiny_ce_factory, pairs):
    ce = tiny_ce_factory(layers=3)
    what = ("pattern", "flows", "rollout")
    hf_scores, hf = run_with_cache(ce, pairs, what, layers="0,2", heads="1-3", batch_size=2)
    tl_scores, tl = run_with_cache(
        ce, pairs, what, layers="0,2", heads="1-3", batch_size=2, backend="transformer_lens"
    )
    np.testing.assert_allclose(tl_scores, hf_scores, rtol=1e-5, atol=1e-6)
    assert set(tl) == set(hf) and tl.index == hf.index and tl.heads == [1, 2, 3]
    for name in hf:
        if name.endswith("hook_pattern"):
            for a, b in zip(tl[name], hf[name]):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        else:
            torch.testing.assert_close(tl[name], hf[name], rtol=1e-5, atol=1e-6)
    with pytest.raises(BadInput, match="capture backend 'jax' is unknown"):
        run_with_cache(ce, pairs, backend="jax")


def test_flow_capture_keeps_only_the_reduced_tensors(tiny_ce_factory, pairs):
    """Memory stays bounded: per pair × layer × head, 25 floats are kept, nothing of size n × n."""
    ce = tiny_ce_factory(layers=3)
    with capture(ce, ("flows",)) as cap:
        for start in range(0, len(pairs), 2):
            batch = ce.encode(pairs[start : start + 2])
            batch.index = [start + i for i in batch.index]
            cap.forward(batch)
    kept = [t for chunks in cap._rows.values() for t in chunks]
    assert all(t.shape[1:] == (4, 5, 5) for t in kept)
    assert sum(t.numel() for t in kept) == len(pairs) * 3 * 4 * 25
    assert cap.cache.index == list(range(len(pairs)))
