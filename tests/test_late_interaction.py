"""LITE head on a tiny random BERT (seconds): it must learn a fixed batch, and old folders must still load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_tiny_bert

from ablations.mice.late_interaction import CONFIG_FILE, LateInteractionScorer
from ablations.training.loop import group_loss
from probe.errors import BadInput
from probe.model import CrossEncoder

QUERIES = ["what is the capital of france", "how do vaccines work"]
DOCS = [
    [
        "Paris is the capital and largest city of France.",
        "Berlin is the capital of Germany.",
        "Cooking pasta takes ten minutes.",
        "The stock market fell sharply on Monday.",
    ],
    [
        "Vaccines train the immune system to recognise a pathogen without causing disease.",
        "An unrelated sentence about trains.",
        "Fever and cough are common flu symptoms.",
        "The Eiffel Tower is in Paris.",
    ],
]
TEACHER = torch.tensor(
    [[6.0, 2.0, -3.0, -4.0], [5.0, -4.0, 1.0, -2.0]]
)  # margin-MSE targets, spread ~ real ones


def _lite(tokenizer, **kw) -> LateInteractionScorer:
    ce = CrossEncoder(make_tiny_bert(tokenizer, layers=2), tokenizer, max_length=64, name="tiny")
    return LateInteractionScorer.from_cross_encoder(ce, "lite", max_doc_length=40, max_query_length=16, **kw)


def _fit(li: LateInteractionScorer, steps: int) -> tuple[float, float, float]:
    """Fixed-batch loss before/after ``steps`` AdamW steps with the retraining recipe's learning rates
    (encoder 3e-5, head 1e-3, gradient clipping 1.0), and the score spread across documents at the start."""
    pairs = [(q, d) for q, docs in zip(QUERIES, DOCS) for d in docs]
    enc = list(li.module.encoder.parameters())
    ids = {id(p) for p in enc}
    opt = torch.optim.AdamW(
        [
            {"params": enc, "lr": 3e-5},
            {"params": [p for p in li.module.parameters() if id(p) not in ids], "lr": 1e-3},
        ],
        weight_decay=0.01,
    )
    li.module.train()
    with torch.no_grad():
        first = li.train_scores(pairs).view(2, 4)
    before = float(group_loss("margin-mse", first, None, TEACHER, 1.0))
    spread = float(first.std(1).mean())
    for _ in range(steps):
        loss = group_loss("margin-mse", li.train_scores(pairs).view(2, 4), None, TEACHER, 1.0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(li.module.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        after = float(group_loss("margin-mse", li.train_scores(pairs).view(2, 4), None, TEACHER, 1.0))
    return before, after, spread


def test_lite_learns_a_fixed_batch(tokenizer):
    # The original head (no scaling) scored every document of a query almost alike and its loss barely
    # moved (here: spread 0.002, loss 57 → 47 in 40 steps); the default (affine) head must depend on the
    # document from the start and fit the batch.
    torch.manual_seed(0)
    li = _lite(tokenizer)
    assert li.module.norm == "affine"
    before, after, spread = _fit(li, 40)
    assert spread > 0.05, spread
    assert after < 0.5 * before, (before, after)
    scores = li.score([(QUERIES[0], d) for d in DOCS[0]])
    assert np.std(scores) > 0.5 and np.argmax(scores) == 0, scores


def test_old_lite_folders_load_as_the_unnormalised_head(tokenizer, tmp_path):
    pairs = [(QUERIES[0], d) for d in DOCS[0]]
    old = _lite(tokenizer, norm="none")
    folder = old.save(tmp_path / "old")
    settings = json.loads((folder / CONFIG_FILE).read_text())
    assert "norm" not in settings  # written exactly as before the setting existed
    loaded = LateInteractionScorer.load(folder)
    assert loaded.module.norm == "none" and loaded.fingerprint() == old.fingerprint()
    assert np.abs(loaded.score(pairs) - old.score(pairs)).max() < 1e-5
    for norm in ("layer", "affine"):  # both round-trip (the affine head's scalars live in head.safetensors)
        new = _lite(tokenizer, norm=norm)
        folder = new.save(tmp_path / norm)
        assert json.loads((folder / CONFIG_FILE).read_text())["norm"] == norm
        loaded = LateInteractionScorer.load(folder)
        assert loaded.module.norm == norm and loaded.fingerprint() == new.fingerprint()
        assert np.abs(loaded.score(pairs) - new.score(pairs)).max() < 1e-5
    with pytest.raises(BadInput, match="norm"):
        _lite(tokenizer, norm="batch")


def _one_match(li: LateInteractionScorer, strength: float) -> float:
    """LITE's score when query token 0 matches document token 2 with cosine ``strength`` and every other
    query × document cosine is 0 (unit vectors on separate axes)."""
    dim = li.module.dim
    eye = torch.eye(dim)
    q = torch.zeros(1, 3, dim)
    q[0, :3] = eye[:3]
    d = torch.zeros(1, 5, dim)
    d[0] = eye[10:15]
    d[0, 2] = strength * eye[0] + (1 - strength**2) ** 0.5 * eye[12]
    ones = torch.ones
    with torch.no_grad():
        return float(
            li.module.eval().interact(q, ones(1, 3, dtype=torch.long), d, ones(1, 5, dtype=torch.long))
        )


def test_affine_head_sees_how_strongly_a_query_token_matches(tokenizer):
    # Why "layer" generalised poorly: a row a·e_j layer-normalises to the same vector for every a > 0, so a
    # strong and a weak match of the same token score alike. The affine head must tell them apart.
    torch.manual_seed(0)
    layer = _lite(tokenizer, norm="layer")
    strong, weak = _one_match(layer, 0.9), _one_match(layer, 0.3)
    layer_gap = abs(strong - weak)
    assert layer_gap < 1e-3, (strong, weak)
    torch.manual_seed(0)
    affine = _lite(tokenizer, norm="affine")
    strong, weak = _one_match(affine, 0.9), _one_match(affine, 0.3)
    assert abs(strong - weak) > 0.01 and abs(strong - weak) > 100 * layer_gap, (strong, weak, layer_gap)


@pytest.mark.parametrize("kind", ["maxsim", "lite"])
@pytest.mark.parametrize("budget", [None, 1])
def test_documents_are_encoded_once_per_call_with_the_pairwise_scores(tokenizer, monkeypatch, kind, budget):
    """Without an index, each distinct document is encoded once per call (chunked under the memory
    budget: 1 byte makes every document its own chunk), with the scores of encoding every pair apart."""
    import ablations.mice.doc_cache as dc

    if budget is not None:
        monkeypatch.setattr(dc, "DOC_STATE_BUDGET", budget)
    ce = CrossEncoder(make_tiny_bert(tokenizer, layers=2), tokenizer, max_length=64, name="tiny")
    li = LateInteractionScorer.from_cross_encoder(ce, kind, max_doc_length=40, max_query_length=16)
    docs = [d for ds in DOCS for d in ds]
    pairs = [(q, d) for q in QUERIES for d in docs]  # every document under both queries
    encoded = []
    real = li.encode_docs
    monkeypatch.setattr(li, "encode_docs", lambda texts, *a: encoded.extend(texts) or real(texts, *a))
    scores = li.score(pairs, batch_size=3)
    assert sorted(encoded) == sorted(docs)
    assert li.index is None
    li.module.eval()
    with torch.no_grad():
        one_by_one = np.array([float(li.train_scores([p])[0]) for p in pairs])
    assert np.abs(scores - one_by_one).max() < 1e-5
