import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.roles import ROLE_NAMES, Role, parse_role, token_roles


def test_roles_of_a_padded_batch(tiny_ce, pairs):
    batch = tiny_ce.encode(pairs)
    roles = batch.roles
    real = batch.attention_mask.bool()
    # every real token has exactly one non-pad role, every padding token is PAD
    assert bool(((roles == Role.PAD) == ~real).all())
    for row in range(len(pairs)):
        r = roles[row][real[row]].tolist()
        assert r[0] == Role.CLS and r[-1] == Role.SEP2
        assert r.count(Role.SEP1) == 1 and r.count(Role.SEP2) == 1 and r.count(Role.CLS) == 1
        s1 = r.index(Role.SEP1)
        assert set(r[1:s1]) == {Role.QUERY}
        assert set(r[s1 + 1 : -1]) == {Role.DOC}
        n_query = len(tiny_ce.tokenizer(pairs[row][0], add_special_tokens=False)["input_ids"])
        assert s1 - 1 == n_query  # the whole query is kept


def test_truncation_keeps_query_and_cuts_document(tiny_ce):
    query = "a fairly long query about the economics of renewable energy"
    doc = "word " * 500
    batch = tiny_ce.encode([(query, doc)])
    assert batch.input_ids.shape[1] == tiny_ce.max_length
    n_query = len(tiny_ce.tokenizer(query, add_special_tokens=False)["input_ids"])
    assert int((batch.roles == Role.QUERY).sum()) == n_query
    assert int((batch.roles == Role.DOC).sum()) == tiny_ce.max_length - n_query - 3


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 4))
def test_roles_from_ids_property(n_query, n_doc, n_pad):
    cls, sep, pad = 101, 102, 0
    ids = [cls] + [7] * n_query + [sep] + [8] * n_doc + [sep] + [pad] * n_pad
    mask = [1] * (len(ids) - n_pad) + [0] * n_pad
    roles = token_roles(torch.tensor([ids]), torch.tensor([mask]), sep)[0].tolist()
    expected = (
        [Role.CLS]
        + [Role.QUERY] * n_query
        + [Role.SEP1]
        + [Role.DOC] * n_doc
        + [Role.SEP2]
        + [Role.PAD] * n_pad
    )
    assert roles == [int(r) for r in expected]


def test_a_row_without_two_separators_is_refused():
    with pytest.raises(ValueError, match="separator"):
        token_roles(torch.tensor([[101, 5, 102, 6]]), torch.ones(1, 4, dtype=torch.long), 102)


def test_role_names():
    assert ROLE_NAMES == ("cls", "query", "sep1", "doc", "sep2", "pad")
    assert parse_role("doc") is Role.DOC
    with pytest.raises(ValueError, match="expected one of cls, query"):
        parse_role("document")
