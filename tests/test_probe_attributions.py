"""probe.attributions: Integrated Gradients per token and per role, with the convergence delta."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probe.attributions import baseline_ids, integrated_gradients, role_summary
from probe.errors import BadInput
from probe.roles import FLOW_ROLES


@pytest.fixture
def sharp_ce(tiny_ce_factory):
    """A tiny BERT whose score actually depends on the tokens (the random init is nearly constant)."""
    ce = tiny_ce_factory(layers=2, seed=3)
    with torch.no_grad():
        ce.model.classifier.weight.mul_(200.0)
        for p in ce.model.bert.encoder.parameters():
            p.mul_(3.0)
    return ce


def test_baseline_pads_query_and_document_only(tiny_ce, pairs):
    batch = tiny_ce.encode(pairs[:2])
    pad = tiny_ce.tokenizer.pad_token_id
    base = baseline_ids(batch.input_ids, batch.roles, pad)
    content = (batch.roles == 1) | (batch.roles == 3)
    assert bool((base[content] == pad).all())
    assert torch.equal(base[~content], batch.input_ids[~content])


def test_attributions_are_complete_up_to_the_reported_delta(sharp_ce, pairs):
    tokens, info = integrated_gradients(sharp_ce, pairs[:3], n_steps=64, batch_size=2)
    assert list(info["pair"]) == [0, 1, 2]
    np.testing.assert_allclose(info["score"], sharp_ce.score(pairs[:3]), rtol=1e-4, atol=1e-5)
    gap = info["score"] - info["baseline_score"]
    assert (gap.abs() > 1e-3).all()  # the test model is sensitive enough for completeness to mean something
    # captum's delta is (sum of attributions) - (F(x) - F(baseline)); it is small relative to the gap
    np.testing.assert_allclose(info["attribution_sum"] - gap, info["delta"], atol=1e-4)
    assert (info["delta"].abs() < 0.05 * gap.abs()).all()
    # CLS and the separators are identical in the baseline: no attribution
    special = tokens[tokens["role"].isin(["cls", "sep1", "sep2"])]
    assert (special["attribution"] == 0).all()
    first = tokens[tokens["pair"] == 0]
    enc = sharp_ce.encode(pairs[:1])
    assert first["token"].tolist() == sharp_ce.tokenizer.convert_ids_to_tokens(enc.input_ids[0].tolist())


def test_more_steps_shrink_the_delta(sharp_ce, pairs):
    _, coarse = integrated_gradients(sharp_ce, pairs[:2], n_steps=4)
    _, fine = integrated_gradients(sharp_ce, pairs[:2], n_steps=64)
    assert fine["delta"].abs().sum() < coarse["delta"].abs().sum()


def test_role_summary_adds_up(sharp_ce, pairs):
    tokens, info = integrated_gradients(sharp_ce, pairs[:2], n_steps=16)
    summary = role_summary(tokens, info)
    assert len(summary) == 2 * len(FLOW_ROLES)
    np.testing.assert_allclose(summary.groupby("pair")["abs_share"].sum(), 1.0, atol=1e-9)
    np.testing.assert_allclose(
        summary.groupby("pair")["attribution"].sum(), info["attribution_sum"], rtol=1e-5
    )
    counts = summary[summary.pair == 0].set_index("role")["tokens"]
    assert counts["cls"] == 1 and counts["sep1"] == 1 and counts["sep2"] == 1
    assert counts["query"] + counts["doc"] + 3 == int((tokens.pair == 0).sum())


def test_word_embedding_layer_and_bad_settings(sharp_ce, pairs):
    tokens, info = integrated_gradients(sharp_ce, pairs[:1], n_steps=32, layer="word_embeddings")
    assert (tokens[tokens.role == "cls"]["attribution"] == 0).all()
    assert abs(info["delta"].item()) < 0.1 * abs(info["score"].item() - info["baseline_score"].item())
    with pytest.raises(BadInput, match="attribution layer 'pooler' is unknown"):
        integrated_gradients(sharp_ce, pairs[:1], layer="pooler")
    with pytest.raises(BadInput, match="n_steps 1 must be >= 2"):
        integrated_gradients(sharp_ce, pairs[:1], n_steps=1)
