"""The masked cross-encoder and the prefix-state cache on tiny random BERTs: the checks that must hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ablations.masking.masked import MaskedCrossEncoder
from ablations.masking.masks import MaskSpec, Rule, compile_mask
from ablations.masking.prefix import PrefixCache, run_from, supports_prefix
from probe.attention import AttentionContext, attention_context
from probe.roles import Role

QUERY_SIDE = (int(Role.CLS), int(Role.QUERY), int(Role.SEP1))


def _states(ce, spec, batch):
    return MaskedCrossEncoder(ce, spec).hidden_states(batch)


def _swap_tokens(batch, role, seed=1):
    """The same batch with every token of ``role`` replaced by another random word piece (same length)."""
    g = torch.Generator().manual_seed(seed)
    ids = batch.input_ids.clone()
    sel = batch.roles == role
    ids[sel] = torch.randint(1000, 20000, (int(sel.sum()),), generator=g)
    return type(batch)(ids, batch.attention_mask, batch.roles, batch.token_type_ids, batch.index)


def _swap_query_tokens(batch, seed=1):
    return _swap_tokens(batch, int(Role.QUERY), seed)


def _swap_docs(ce, pairs):
    """Same queries, documents rotated by one: a different pairing."""
    docs = [d for _, d in pairs]
    return [(q, docs[(i + 1) % len(docs)]) for i, (q, _) in enumerate(pairs)]


# ------------------------------------------------------------------------------------ exactness
def test_removing_nothing_reproduces_the_full_model(tiny_ce_factory, pairs):
    ce = tiny_ce_factory(layers=3)
    full = ce.score(pairs, batch_size=2)
    assert np.abs(MaskedCrossEncoder(ce, MaskSpec()).score(pairs, batch_size=2) - full).max() < 1e-5
    # forced through the bias path, an all-allowed table adds a zero bias and gives the same scores
    batch = ce.encode(pairs)
    zero = compile_mask(MaskSpec.remove("doc2query"), 3, 4)
    zero.tables = [torch.ones_like(t) for t in zero.tables]
    with (
        torch.inference_mode(),
        attention_context(ce.model, AttentionContext(bias=zero.bias_fn(batch.roles))),
    ):
        forced = ce.forward(batch).numpy()
    assert np.abs(forced - full).max() < 1e-5


def test_masked_scores_change_and_rank_api(tiny_ce, pairs):
    masked = MaskedCrossEncoder(tiny_ce, MaskSpec.remove("cls2doc"))
    a, b = tiny_ce.score(pairs), masked.score(pairs)
    assert a.shape == b.shape and np.abs(a - b).max() > 1e-6
    ranked = masked.rank(pairs[0][0], [d for _, d in pairs])
    assert sorted(i for i, _ in ranked) == list(range(len(pairs)))
    assert "cls2doc" in masked.name


def test_no_nan_even_when_every_interaction_is_removed(tiny_ce, pairs):
    masked = MaskedCrossEncoder(tiny_ce, MaskSpec.remove("*2*"))
    scores = masked.score(pairs, batch_size=2)  # batches with padding
    assert np.isfinite(scores).all()
    # every token reads only itself: CLS never sees the pair, so every pair scores the same
    assert np.ptp(scores) < 1e-6
    for h in masked.hidden_states(tiny_ce.encode(pairs)):
        assert torch.isfinite(h).all()


def test_heads_are_masked_separately(tiny_ce_factory, pairs):
    ce = tiny_ce_factory(layers=2, heads=4)
    batch = ce.encode(pairs)
    one_head = _states(ce, MaskSpec.remove("cls2*", heads="1"), batch)[-1]
    all_heads = _states(ce, MaskSpec.remove("cls2*"), batch)[-1]
    full = _states(ce, MaskSpec(), batch)[-1]
    assert not torch.allclose(one_head, full) and not torch.allclose(one_head, all_heads)


# ---------------------------------------------------------------------------- query independence
def test_doc2query_blocks_the_direct_path_only(tiny_ce_factory, pairs):
    """``doc2query`` alone: document states after layer 0 do not depend on the query, but from layer 1
    on they do, through CLS / SEP1 / SEP2, which still read the query (two-hop paths)."""
    ce = tiny_ce_factory(layers=3)
    batch = ce.encode(pairs)
    other = _swap_query_tokens(batch)
    doc = batch.roles == int(Role.DOC)
    a, b = _states(ce, MaskSpec.remove("doc2query"), batch), _states(ce, MaskSpec.remove("doc2query"), other)
    assert torch.allclose(a[1][doc], b[1][doc], atol=1e-6)  # layer 0 output
    assert (a[-1][doc] - b[-1][doc]).abs().max() > 1e-5  # indirect paths from layer 1 on
    plain_a, plain_b = _states(ce, MaskSpec(), batch), _states(ce, MaskSpec(), other)
    assert (plain_a[1][doc] - plain_b[1][doc]).abs().max() > 1e-5  # and the full model does depend


@pytest.mark.parametrize(
    "spec",
    [
        MaskSpec.remove("doc2query+doc2cls+doc2sep"),
        MaskSpec.remove("mice-step2"),
        MaskSpec.remove("mice-step3"),
    ],
)
def test_document_states_are_query_independent(tiny_ce_factory, pairs, spec):
    """With every path from the query into the document cut in all layers (documents read only documents
    and SEP2, and SEP2 reads only itself — as in MICE step 2), every layer's document states are unchanged
    when the query tokens change (same query length: positions are part of the input)."""
    ce = tiny_ce_factory(layers=3)
    batch = ce.encode(pairs)
    other = _swap_query_tokens(batch)
    doc = batch.roles == int(Role.DOC)
    a, b = _states(ce, spec, batch), _states(ce, spec, other)
    for layer in range(len(a)):
        assert torch.allclose(a[layer][doc], b[layer][doc], atol=1e-5), layer
    q = batch.roles == int(Role.QUERY)
    assert (a[-1][q] - b[-1][q]).abs().max() > 1e-3  # the query itself did change


def test_query_doc_removal_leaves_only_hub_paths(tiny_ce_factory, pairs):
    """What exactly holds when every query↔document interaction is removed in every layer.

    1. ``query2doc+doc2query``: after layer 0 query states do not depend on the document's words (only on
       its length, through SEP2's position); from layer 1 on they do, via CLS and the separators, and so
       does the score.
    2. Cutting the hubs too (query and document tokens read neither CLS nor a separator of the other side)
       makes every query-side state independent of the document at every layer; the score still
       depends on the pairing, because CLS reads both sides.
    3. If CLS and SEP1 also cannot read the document side, the score is the same for every document
       of a query: the pairing no longer matters at all.
    """
    ce = tiny_ce_factory(layers=3)
    swapped = _swap_docs(ce, pairs)
    batch, other = ce.encode(pairs), ce.encode(swapped)
    # compare the query side only: its tokens and positions are identical in both pairings
    n_q = [int((r == int(Role.QUERY)).sum()) + 2 for r in batch.roles]

    def query_side(states, layer):
        return [states[layer][i, :n] for i, n in enumerate(n_q)]

    def same(x, y, atol=1e-5):
        return all(torch.allclose(a, b, atol=atol) for a, b in zip(x, y))

    spec1 = MaskSpec.remove("query2doc+doc2query")
    # (1) same pairing shape, other document words: layer-0 query states are unchanged (SEP2's position
    # would leak the document *length*, so the words are swapped in place), later ones are not.
    same_len = _swap_tokens(batch, int(Role.DOC))
    q = batch.roles == int(Role.QUERY)
    a, b = _states(ce, spec1, batch), _states(ce, spec1, same_len)
    assert torch.allclose(a[1][q], b[1][q], atol=1e-6)
    assert (a[-1][q] - b[-1][q]).abs().max() > 1e-5
    m1 = MaskedCrossEncoder(ce, spec1)
    assert np.abs(m1.score(pairs) - m1.score(swapped)).max() > 1e-6

    spec2 = spec1 + MaskSpec.remove(
        "query2cls+query2sep2+sep12doc+sep12sep2+sep12cls+doc2cls+doc2sep1+sep22query+sep22sep1+sep22cls"
    )
    a, b = _states(ce, spec2, batch), _states(ce, spec2, other)
    for layer in range(len(a)):
        got = [x[1:] for x in query_side(a, layer)], [x[1:] for x in query_side(b, layer)]
        assert same(*got), layer
    m2 = MaskedCrossEncoder(ce, spec2)
    assert np.abs(m2.score(pairs) - m2.score(swapped)).max() > 1e-6  # CLS still reads both sides

    spec3 = MaskSpec.remove("query2doc+query2sep2+sep12doc+sep12sep2+cls2doc+cls2sep2")
    m3 = MaskedCrossEncoder(ce, spec3)
    docs = [d for _, d in pairs]
    for query in {q for q, _ in pairs}:
        s = m3.score([(query, d) for d in docs])
        assert np.ptp(s) < 1e-5, query


# ------------------------------------------------------------------------------- prefix cache
@pytest.mark.parametrize(
    "spec",
    [
        MaskSpec.remove("doc2query", layers="2"),
        MaskSpec.remove("mice-step2"),
        MaskSpec([Rule("query2doc", "2", "1,2")]),
        MaskSpec.remove("*2*", layers="1-3"),
        MaskSpec.remove("cls2doc", layers="3"),
    ],
)
def test_prefix_cache_equals_the_full_masked_forward(tiny_ce_factory, pairs, spec):
    ce = tiny_ce_factory(layers=4, hidden=64)
    assert supports_prefix(ce)
    many = pairs * 3
    cache = PrefixCache(ce, many, batch_size=4)
    compiled = compile_mask(spec, 4, 4)
    full = MaskedCrossEncoder(ce, compiled).score(many, batch_size=4)
    for cls_only_last in (True, False):
        for rows_shortcut in (True, False):
            got = cache.score(compiled, cls_only_last=cls_only_last, rows_shortcut=rows_shortcut)
            assert np.abs(got - full).max() < 1e-5, (cls_only_last, rows_shortcut)
    assert np.abs(full - ce.score(many)).max() > 1e-6  # the mask does change the scores


def test_rows_shortcut_recomputes_only_the_changed_rows(tiny_ce_factory, pairs):
    """Removing query2doc in the last layer cannot change the score (CLS keeps its keys): exact baseline."""
    ce = tiny_ce_factory(layers=3)
    cache = PrefixCache(ce, pairs, batch_size=2)
    assert (
        np.abs(
            cache.score(compile_mask(MaskSpec.remove("query2doc", layers="2"), 3, 4)) - ce.score(pairs)
        ).max()
        < 1e-5
    )
    assert compile_mask(MaskSpec.remove("cls2doc+query2doc"), 3, 4).affected_sources(0) == {
        int(Role.CLS),
        int(Role.QUERY),
    }


@pytest.mark.parametrize("rows_shortcut,unmasked_layers", [(False, 3), (True, 4)])
def test_prefix_cache_computes_each_prefix_layer_once(tiny_ce_factory, pairs, rows_shortcut, unmasked_layers):
    ce = tiny_ce_factory(layers=4)
    cache = PrefixCache(ce, pairs, batch_size=2)
    n_batches = len(cache.batches)
    for layer in range(4):
        for inter in ("doc2query", "query2doc"):
            cache.score(
                compile_mask(MaskSpec.remove(inter, layers=str(layer)), 4, 4), rows_shortcut=rows_shortcut
            )
    # layers 0, 1, 2 once each (+ layer 3's unmasked output, kept for the rows shortcut)
    assert cache.layers_computed == unmasked_layers * n_batches
    cache.score(compile_mask(MaskSpec.remove("doc2query", layers="0"), 4, 4), rows_shortcut=False)
    assert cache.layers_computed == unmasked_layers * n_batches  # back to layer 0: no prefix layer needed


def test_prefix_cache_spills_to_disk_when_over_budget(tiny_ce_factory, pairs, tmp_path):
    ce = tiny_ce_factory(layers=3)
    compiled = compile_mask(MaskSpec.remove("doc2query", layers="2"), 3, 4)
    in_memory = PrefixCache(ce, pairs, batch_size=2).score(compiled)
    spilled = PrefixCache(ce, pairs, batch_size=2, max_bytes=1, spill_dir=tmp_path)
    assert np.abs(spilled.score(compiled) - in_memory).max() < 1e-6
    files = list(tmp_path.rglob("*.pt"))
    assert len(files) == 2 * len(spilled.batches)  # two layers of states; older layers deleted
    spilled.close()
    assert not any(tmp_path.iterdir())


def test_run_from_refuses_a_prefix_past_the_first_masked_layer(tiny_ce_factory, pairs):
    ce = tiny_ce_factory(layers=3)
    cache = PrefixCache(ce, pairs, batch_size=8)
    batch, h, _ = next(cache.states(2))
    with pytest.raises(ValueError, match="already removes"):
        run_from(ce, batch, h, 2, compile_mask(MaskSpec.remove("doc2query", layers="1"), 3, 4))
