import numpy as np
import pytest
import torch

from probe.errors import BadInput
from probe.model import CrossEncoder
from probe.roles import Role


def test_sorted_batching_returns_scores_in_input_order(tiny_ce, pairs):
    one_by_one = np.array([tiny_ce.score([p])[0] for p in pairs])
    batched = tiny_ce.score(pairs, batch_size=2)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    # the batches really are sorted by length, longest first
    lengths = [int(b.attention_mask.sum(1).max()) for b in tiny_ce.batches(pairs, batch_size=2)]
    assert lengths == sorted(lengths, reverse=True)


def test_rank_orders_by_score(tiny_ce, pairs):
    docs = [d for _, d in pairs]
    ranked = tiny_ce.rank("capital of france", docs)
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)
    assert sorted(i for i, _ in ranked) == list(range(len(docs)))


def test_save_and_reload_gives_the_same_scores(tiny_ce, pairs, tmp_path):
    tiny_ce.save(tmp_path / "m")
    again = CrossEncoder.from_pretrained(tmp_path / "m", max_length=64)
    np.testing.assert_allclose(again.score(pairs), tiny_ce.score(pairs), atol=1e-6)


def test_two_label_models_score_the_logit_difference(tiny_ce_factory, pairs):
    ce = tiny_ce_factory(num_labels=2)
    batch = ce.encode(pairs[:2])
    with torch.no_grad():
        logits = ce.model(**batch.model_inputs()).logits
    np.testing.assert_allclose(ce.score(pairs[:2]), (logits[:, 1] - logits[:, 0]).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "pair, message",
    [
        (("", "a document"), "query is empty"),
        (("a query", "   "), "document is empty"),
    ],
)
def test_bad_pairs_are_refused_with_one_clear_message(tiny_ce, pair, message):
    with pytest.raises(BadInput, match=message):
        tiny_ce.score([pair])


def test_unknown_model_paths_and_ids(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BadInput, match="does not exist"):
        CrossEncoder.from_pretrained(str(tmp_path / "nope" / "model"))
    with pytest.raises(BadInput, match="no config.json"):
        CrossEncoder.from_pretrained(tmp_path)
    with pytest.raises(BadInput, match="cannot load model 'org/not-a-model'"):
        CrossEncoder.from_pretrained("org/not-a-model")


@pytest.mark.slow
def test_encoder_without_a_head_is_refused():
    from ablations.paths import resolve_model

    with pytest.raises(BadInput, match="no trained sequence-classification head"):
        CrossEncoder.from_pretrained(resolve_model("minilm-l6"))


@pytest.mark.slow
def test_scores_equal_sentence_transformers_predict(tmp_path):
    """Our scorer and sentence-transformers' CrossEncoder.predict agree on the real MiniLM-L6 (1e-4)."""
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from ablations.data.collections import load_collection
    from ablations.paths import resolve_model

    torch.manual_seed(0)
    ours = CrossEncoder.from_pretrained(resolve_model("minilm-l6"), new_head=True)
    ours.save(tmp_path / "ce")
    theirs = STCrossEncoder(str(tmp_path / "ce"), max_length=256, device="cpu")
    pairs = load_collection("dl19").subset(3, 20).pairs()
    expected = theirs.predict(pairs, activation_fn=torch.nn.Identity(), batch_size=16)
    got = CrossEncoder.from_pretrained(tmp_path / "ce").score(pairs, batch_size=16)
    assert np.abs(got - expected).max() < 1e-4
    assert np.std(got) > 1e-3  # not a constant model


def test_a_long_query_is_cut_at_its_limit_and_said_once(tiny_ce, capsys):
    """A query past the limit (default: half of max_length) keeps its first tokens, is noted once on
    stderr, and scores as the cut query does; an explicit limit that leaves no room for the document is
    refused in one line naming the budget."""
    long_query = "word " * 80
    assert tiny_ce.query_limit == 32 and tiny_ce.query_budget == 60
    batch = tiny_ce.encode([(long_query, "a document"), (long_query, "another document")])
    assert int((batch.roles[0] == Role.QUERY).sum()) == 32
    err = capsys.readouterr().err
    assert err.count("has 80 tokens; kept the first 32 (--max-query-length)") == 1, err
    cut = " ".join(["word"] * 32)
    assert np.allclose(tiny_ce.score([(long_query, "a document")]), tiny_ce.score([(cut, "a document")]))
    tiny_ce.set_max_query_length(50)
    assert int((tiny_ce.encode([(long_query, "a document")]).roles[0] == Role.QUERY).sum()) == 50
    tiny_ce.set_max_query_length(61)
    with pytest.raises(BadInput, match="max_query_length 61 leaves no room for the document: at most 60"):
        tiny_ce.encode([(long_query, "a document")])
    with pytest.raises(BadInput, match="max_query_length 0 must be >= 1"):
        tiny_ce.set_max_query_length(0)


def test_a_saved_model_folder_honours_the_umask(tiny_ce, tmp_path):
    """transformers writes the weights 0600; a saved folder (a trained or retrained model) is shared, so
    every file gets the umask's mode."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        tiny_ce.save(tmp_path / "m")
    finally:
        os.umask(old)
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in (tmp_path / "m").iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes
