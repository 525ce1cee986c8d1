"""LITE head on a tiny random BERT (seconds): it must learn a fixed batch, and old folders must still load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_tiny_bert

from ablations.late_interaction import CONFIG_FILE, LateInteractionScorer
from ablations.train import group_loss
from probe.errors import BadInput
from probe.model import CrossEncoder

QUERIES = ["what is the capital of france", "how do vaccines work"]
DOCS = [
    ["Paris is the capital and largest city of France.", "Berlin is the capital of Germany.",
     "Cooking pasta takes ten minutes.", "The stock market fell sharply on Monday."],
    ["Vaccines train the immune system to recognise a pathogen without causing disease.",
     "An unrelated sentence about trains.", "Fever and cough are common flu symptoms.",
     "The Eiffel Tower is in Paris."],
]
TEACHER = torch.tensor([[6.0, 2.0, -3.0, -4.0], [5.0, -4.0, 1.0, -2.0]])  # margin-MSE targets, spread ~ real ones


def _lite(tokenizer, **kw) -> LateInteractionScorer:
    ce = CrossEncoder(make_tiny_bert(tokenizer, layers=2), tokenizer, max_length=64, name="tiny")
    return LateInteractionScorer.from_cross_encoder(ce, "lite", max_doc_length=40, max_query_length=16, **kw)


def _fit(li: LateInteractionScorer, steps: int) -> tuple[float, float, float]:
    """Fixed-batch loss before/after ``steps`` AdamW steps with the retraining recipe's learning rates
    (encoder 3e-5, head 1e-3, gradient clipping 1.0), and the score spread across documents at the start."""
    pairs = [(q, d) for q, docs in zip(QUERIES, DOCS) for d in docs]
    enc = list(li.module.encoder.parameters())
    ids = {id(p) for p in enc}
    opt = torch.optim.AdamW([{"params": enc, "lr": 3e-5},
                             {"params": [p for p in li.module.parameters() if id(p) not in ids], "lr": 1e-3}],
                            weight_decay=0.01)
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
    # The original head (no normalisation) scored every document of a query almost alike and its loss barely
    # moved (here: spread 0.002, loss 57 → 47 in 40 steps); the normalised head must depend on the document
    # from the start and fit the batch (here: spread 0.16, loss 54 → 0.05).
    torch.manual_seed(0)
    li = _lite(tokenizer)
    assert li.module.norm == "layer"
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
    new = _lite(tokenizer)
    folder = new.save(tmp_path / "new")
    assert json.loads((folder / CONFIG_FILE).read_text())["norm"] == "layer"
    assert np.abs(LateInteractionScorer.load(folder).score(pairs) - new.score(pairs)).max() < 1e-5
    with pytest.raises(BadInput, match="norm"):
        _lite(tokenizer, norm="batch")
