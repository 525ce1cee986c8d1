"""The document-state index: exact scores from disk, size reported, and bad caches refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_bert

from ablations.mice.config import preset
from ablations.mice.doc_cache import DocStateIndex
from ablations.mice.model import MiceModel
from probe.errors import BadInput
from probe.model import CrossEncoder

SMALL = {"max_length": 64, "max_doc_length": 40, "max_query_length": 16}


def _mice(tokenizer, seed=0, **kw) -> MiceModel:
    ce = CrossEncoder(make_tiny_bert(tokenizer, layers=4, seed=seed), tokenizer, max_length=64, name="tiny")
    with torch.no_grad():
        ce.model.classifier.weight.mul_(50)
    return MiceModel(ce, preset("mice-l2+2", 4, 4, "tiny", **{**SMALL, **kw}))


@pytest.fixture
def built(tokenizer, pairs, tmp_path):
    mice = _mice(tokenizer)
    online = mice.score(pairs)
    index = mice.build_index([d for _, d in pairs], tmp_path / "docs.safetensors")
    return mice, online, index, tmp_path / "docs.safetensors"


def test_cached_scores_equal_online_scores(built, pairs):
    mice, online, index, path = built
    assert len(index) == len({d for _, d in pairs})
    cached = mice.score(pairs, batch_size=100)
    assert np.abs(cached - online).max() < 1e-5
    # reopened from disk by another model object with the same weights and configuration
    other = MiceModel(mice.ce, mice.config)
    other.attach_index(path)
    assert np.abs(other.score(pairs) - online).max() < 1e-5
    # size: 2 layers × (K, V) × hidden 32 × 4 bytes per token
    assert index.bytes_per_token == 2 * 2 * 32 * 4
    assert index.nbytes == index.bytes_per_token * sum(
        len(d) for d in mice.executor.tokenize_docs(list(dict.fromkeys(d for _, d in pairs)))
    ) + index.bytes_per_token * len(index)
    assert "KiB per document" in index.describe()


def test_float16_index_is_half_the_size_and_close(tokenizer, pairs, tmp_path):
    mice = _mice(tokenizer, cache_dtype="float16")
    online = mice.score(pairs)
    index = mice.build_index([d for _, d in pairs], tmp_path / "half.safetensors")
    assert index.bytes_per_token == 2 * 2 * 32 * 2
    assert np.abs(mice.score(pairs) - online).max() < 1e-2


def test_missing_documents(built, pairs):
    mice, online, _, _ = built
    extra = [(pairs[0][0], "A document that was never indexed.")]
    with pytest.raises(BadInput, match="1 document\\(s\\) are not in the document-state index"):
        mice.score(pairs + extra)
    mice.strict_index = False  # computed on the fly instead
    assert np.abs(mice.score(pairs + extra)[: len(pairs)] - online).max() < 1e-5


def test_index_of_another_model_is_refused(built, tokenizer):
    _, _, _, path = built
    other = _mice(tokenizer, seed=1)
    with pytest.raises(BadInput, match="was built by another model or configuration \\(model differ"):
        other.attach_index(path)
    moved = _mice(tokenizer, doc_position_offset=12)  # same weights, another position convention
    with pytest.raises(BadInput, match="config differ"):
        moved.attach_index(path)


def test_missing_and_corrupt_files_are_refused(built, tmp_path):
    mice, _, _, path = built
    with pytest.raises(BadInput, match="does not exist"):
        mice.attach_index(tmp_path / "nope.safetensors")
    data = bytearray(path.read_bytes())
    flipped = tmp_path / "flipped.safetensors"
    data[-10] ^= 0xFF  # one byte of the states
    flipped.write_bytes(bytes(data))
    with pytest.raises(BadInput, match="corrupt \\(checksum mismatch\\)"):
        mice.attach_index(flipped)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: len(data) // 2])
    with pytest.raises(BadInput, match="is corrupt or unreadable"):
        mice.attach_index(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not an index at all")
    with pytest.raises(BadInput, match="is corrupt or unreadable"):
        DocStateIndex.open(junk)


def test_messages_are_one_line(built, tmp_path):
    mice, _, _, _ = built
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(BadInput) as err:
        mice.attach_index(junk)
    assert "\n" not in str(err.value)


def test_index_needs_the_doc_cache_plan(tokenizer, pairs, tmp_path):
    ce = CrossEncoder(make_tiny_bert(tokenizer, layers=4), tokenizer, max_length=64, name="tiny")
    mice = MiceModel(ce, preset("mice-step3@2", 4, 4, "tiny", doc_positions="joint", **SMALL))
    assert mice.plan.shape == "split"
    with pytest.raises(BadInput, match="needs the 'doc-cache' plan"):
        mice.build_index([d for _, d in pairs], tmp_path / "x.safetensors")


def test_save_and_load_round_trip(built, pairs, tmp_path):
    mice, online, _, _ = built
    folder = mice.save(tmp_path / "mice-model")
    again = MiceModel.load(folder)
    assert again.config.weights == "." and again.plan.shape == "doc-cache"
    assert np.abs(again.score(pairs) - online).max() < 1e-5


def _repeating_pairs(pairs):
    """Every query with every document: documents recur across queries, as in a BEIR collection."""
    queries = list(dict.fromkeys(q for q, _ in pairs))
    docs = list(dict.fromkeys(d for _, d in pairs))
    return [(q, d) for q in queries for d in docs]


@pytest.mark.parametrize("budget", [None, 1])
def test_documents_are_computed_once_per_call_with_the_plans_scores(tokenizer, pairs, monkeypatch, budget):
    """Without an index, a doc-cache model computes each distinct document's states once per call (in
    chunks under the memory budget: 1 byte makes every document its own chunk); the scores are the
    masked full forward's, whatever the chunking."""
    import ablations.mice.doc_cache as dc

    if budget is not None:
        monkeypatch.setattr(dc, "DOC_STATE_BUDGET", budget)
    mice = _mice(tokenizer)
    many = _repeating_pairs(pairs)
    computed = []
    real = dc.DocStateIndex.compute
    monkeypatch.setattr(
        dc.DocStateIndex, "compute", staticmethod(lambda m, t, **kw: computed.extend(t) or real(m, t, **kw))
    )
    scores = mice.score(many, batch_size=3)
    assert sorted(computed) == sorted({d for _, d in many})  # each distinct document once
    assert mice.index is None  # nothing left attached
    with mice.using_plan("masked"):
        masked = mice.score(many)
    assert np.abs(scores - masked).max() < 1e-5
