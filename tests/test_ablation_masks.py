"""Interaction vocabulary, layer ranges, mask specs (JSON) and the mask compiler."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ablations.masking.interactions import (
    DEFAULT_MICE_K,
    default_final_preset,
    default_mice_k,
    parse_interaction,
    preset_rules,
)
from ablations.masking.masks import (
    MaskSpec,
    Rule,
    compile_mask,
    expand_table,
    read_spec,
)
from probe.errors import BadInput
from probe.ranges import format_ranges, parse_ranges, resolve_ranges
from probe.roles import Role

C, Q, S1, D, S2, P = (int(r) for r in Role)


# ------------------------------------------------------------------------------------ interactions
def test_named_interactions_are_source_attends_target():
    assert parse_interaction("doc2query").pairs == {(D, Q)}
    assert parse_interaction("query2doc").pairs == {(Q, D)}
    assert parse_interaction("*2sep").pairs == {(r, s) for r in (C, Q, S1, D, S2) for s in (S1, S2)}
    assert parse_interaction("sep2*").pairs == {(s, r) for r in (C, Q, S1, D, S2) for s in (S1, S2)}
    assert parse_interaction("sep12doc").pairs == {(S1, D)}
    assert parse_interaction("sep2doc").pairs == {(S1, D), (S2, D)}  # "sep" = both separators
    assert parse_interaction("sep22sep1").pairs == {(S2, S1)}
    assert parse_interaction("query2doc+doc2query").pairs == {(Q, D), (D, Q)}
    assert all(P not in pair for pair in parse_interaction("*2*").pairs)  # padding is never an interaction


@pytest.mark.parametrize("bad", ["doc2qry", "docquery", "2doc", "doc2", "pad2doc", "doc2query+", ""])
def test_unknown_interactions_list_the_valid_ones(bad):
    with pytest.raises(BadInput) as exc:
        parse_interaction(bad)
    assert "doc2query" in str(exc.value) and "mice-step0" in str(exc.value)


def test_mice_presets_are_cumulative():
    steps = [preset_rules(f"mice-step{i}") for i in range(4)]
    for prev, cur in itertools.pairwise(steps):
        assert cur[: len(prev)] == prev
    assert preset_rules("mice-step3") == preset_rules(f"mice-step3@{DEFAULT_MICE_K}")
    assert preset_rules("mice-step3", 12) == preset_rules("mice-step3@4")  # K scales with depth
    assert preset_rules("mice-step3", 6) == preset_rules("mice-step3@2")
    assert preset_rules("mice-step3-l4") == preset_rules("mice-step3@4")
    assert preset_rules("mice-step3@4")[-1].layers == "0-3"
    assert preset_rules("mice-step3@0") == preset_rules("mice-step2")  # interaction from layer 0 = step 2
    assert preset_rules("doc2query") is None
    with pytest.raises(BadInput, match="only mice-step3 takes"):
        preset_rules("mice-step1@2")


def test_mice_step_tables_match_the_paper():
    """Step 0-3 as 'X ↛ Y' tables (4 layers, K=2)."""
    tables = [
        compile_mask(MaskSpec.remove(f"mice-step{i}" + ("@2" if i == 3 else "")), 4, 2).allowed[:, 0]
        for i in range(4)
    ]
    a0, a1, a2, a3 = tables
    # step 0: only CLS reads CLS; doc ↛ SEP1; query ↛ SEP2; SEPs read only themselves.
    assert a0[:, C, C].all() and not a0[:, [Q, S1, D, S2], C].any()
    assert not a0[:, D, S1].any() and not a0[:, Q, S2].any()
    assert a0[:, S1, S1].all() and a0[:, S2, S2].all()
    assert not a0[:, S1, [C, Q, D, S2]].any() and not a0[:, S2, [C, Q, S1, D]].any()
    assert a0[:, D, Q].all() and a0[:, Q, D].all() and a0[:, C, D].all()
    # step 1: + CLS ↛ doc, SEP2 (CLS reads the query side only)
    assert not a1[:, C, D].any() and not a1[:, C, S2].any() and a1[:, C, Q].all() and a1[:, C, S1].all()
    # step 2: + doc ↛ query everywhere
    assert not a2[:, D, Q].any() and a2[:, Q, D].all()
    # step 3@2: + query ↛ doc in layers 0-1 only
    assert not a3[:2, Q, D].any() and a3[2:, Q, D].all()
    # padding rows and columns are never touched
    for t in tables:
        assert t[:, P, :].all() and t[:, :, P].all()


# -------------------------------------------------------------------------------------- ranges
@pytest.mark.parametrize(
    "text,expected",
    [
        ("0-6", ((0, 6),)),
        ("0-2,5", ((0, 2), (5, 5))),
        ("3", ((3, 3),)),
        (" 1 - 2", None),
        ("all", None),
        ("ALL", None),
    ],
)
def test_parse_ranges(text, expected):
    if text == " 1 - 2":
        with pytest.raises(BadInput):
            parse_ranges(text)
        return
    assert parse_ranges(text) == expected


@pytest.mark.parametrize("bad", ["7-2", "a-b", "", "1-", "-1", "1--2", "0,,2", "1.5", "0-2;4"])
def test_malformed_ranges_name_the_value(bad):
    with pytest.raises(BadInput) as exc:
        parse_ranges(bad, "layers")
    assert repr(bad) in str(exc.value) or "empty" in str(exc.value)


def test_range_end_past_last_layer_is_clamped_with_one_line_notice():
    assert resolve_ranges("0-6", 6) == (tuple(range(6)), "layers 0-6 → 0-5: the model has 6 layers")
    assert resolve_ranges("0-5", 6) == (tuple(range(6)), None)
    assert resolve_ranges("0-1,4-9", 6)[0] == (0, 1, 4, 5)
    with pytest.raises(BadInput, match="starts at layer 7, beyond the last layer 5"):
        resolve_ranges("7-9", 6)
    with pytest.raises(BadInput, match="out of range"):
        resolve_ranges("2-4", 4, "heads", clamp=False)


def test_heads_follow_the_layers_rule_and_clamped_masks_are_the_same_run():
    """One rule for layers and heads: an end past the last is clamped with a notice (and compiles to the
    same mask, so the same run id, as the clamped range), a start past it is refused."""
    clamped = compile_mask(MaskSpec([Rule("doc2query", "0-99", "2-5")]), 3, 4)
    exact = compile_mask(MaskSpec([Rule("doc2query", "0-2", "2-3")]), 3, 4)
    assert clamped.notices == [
        "layers 0-99 → 0-2: the model has 3 layers",
        "heads 2-5 → 2-3: the model has 4 heads",
    ]
    assert clamped.key() == exact.key()
    with pytest.raises(BadInput, match="heads range '4-5' starts at head 4, beyond the last head 3"):
        compile_mask(MaskSpec([Rule("doc2query", "all", "4-5")]), 3, 4)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 40), min_size=1))
def test_format_then_parse_round_trips(indices):
    text = format_ranges(indices)
    parsed = parse_ranges(text)
    assert {i for s, e in parsed for i in range(s, e + 1)} == indices
    assert all(s <= e for s, e in parsed)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789-, al", max_size=12), st.integers(1, 24))
def test_range_parser_only_raises_badinput_and_stays_in_bounds(text, n):
    try:
        picked, notice = resolve_ranges(text, n)
    except BadInput:
        return
    assert all(0 <= i < n for i in picked) and list(picked) == sorted(set(picked))
    ranges = parse_ranges(text)
    clamped = ranges is not None and max(e for _, e in ranges) > n - 1
    assert (notice is not None) == clamped


# -------------------------------------------------------------------------------------- specs
rule_st = st.builds(
    Rule,
    interaction=st.sampled_from(
        [
            "doc2query",
            "query2doc",
            "*2sep",
            "sep2*",
            "cls2doc+cls2query",
            "mice-step2",
            "mice-step3@4",
            "doc2doc",
        ]
    ),
    layers=st.one_of(st.just("all"), st.sets(st.integers(0, 11), min_size=1).map(format_ranges)),
    heads=st.one_of(st.just("all"), st.sets(st.integers(0, 11), min_size=1).map(format_ranges)),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(rule_st, max_size=5))
def test_spec_json_round_trip(rules):
    spec = MaskSpec(rules)
    text = spec.to_json()
    back = MaskSpec.from_json(text)
    assert back == spec and back.to_json() == text
    assert json.loads(text)["schema_version"] == 1


def test_spec_validation():
    with pytest.raises(BadInput, match="unknown interaction"):
        MaskSpec.from_json('{"schema_version": 1, "rules": [{"interaction": "doc2qry"}]}')
    with pytest.raises(BadInput, match="schema_version"):
        MaskSpec.from_json('{"schema_version": 9, "rules": []}')
    with pytest.raises(BadInput, match="malformed layers"):
        Rule("doc2query", "7-2")
    with pytest.raises(BadInput, match="not valid JSON"):
        MaskSpec.from_json("{")
    with pytest.raises(BadInput, match="empty mask"):
        MaskSpec().require_rules()


# ------------------------------------------------------------------------------------ compiler
def test_compile_layers_heads_and_dedup():
    spec = MaskSpec([Rule("doc2query", "0-2"), Rule("query2doc", "1", "0,2")])
    cm = compile_mask(spec, 4, 4)
    assert cm.allowed.shape == (4, 4, 6, 6) and cm.per_head
    assert not cm.allowed[0:3, :, D, Q].any() and cm.allowed[3, :, D, Q].all()
    assert not cm.allowed[1, [0, 2], Q, D].any() and cm.allowed[1, [1, 3], Q, D].all()
    assert cm.allowed[[0, 2, 3], :, Q, D].all()
    assert cm.groups == [0, 1, 0, -1]  # layers 0 and 2 share one table; layer 3 untouched
    assert cm.first_layer == 0 and cm.masked_layers == (0, 1, 2)
    assert compile_mask(MaskSpec.remove("doc2query", layers="2-3"), 4, 4).first_layer == 2
    assert compile_mask(MaskSpec(), 4, 4).is_empty


def test_compile_checks_against_the_model():
    with pytest.raises(BadInput, match="starts at layer 6"):
        compile_mask(MaskSpec.remove("doc2query", layers="6-8"), 6, 4)
    with pytest.raises(BadInput, match="starts at head 4"):
        compile_mask(MaskSpec.remove("doc2query", heads="4-5"), 6, 4)
    cm = compile_mask(MaskSpec.remove("doc2query", heads="3-4"), 6, 4)  # heads follow the layers' rule
    assert cm.notices == ["heads 3-4 → 3: the model has 4 heads"]
    assert not cm.allowed[:, 3, D, Q].any() and cm.allowed[:, :3, D, Q].all()
    cm = compile_mask(MaskSpec.remove("doc2query", layers="0-6"), 6, 4)
    assert cm.notices == ["layers 0-6 → 0-5: the model has 6 layers"] and cm.masked_layers == tuple(range(6))


def test_preset_intersected_with_rule_layers():
    cm = compile_mask(MaskSpec([Rule("mice-step3@4", "2-5")]), 6, 2)
    assert cm.masked_layers == (2, 3, 4, 5)
    a = cm.allowed[:, 0]
    assert not a[2:4, Q, D].any() and a[4:, Q, D].all() and a[:2].all()


def _roles(*rows):
    return torch.tensor(rows, dtype=torch.long)


def test_expand_table_gathers_roles_and_falls_back_to_self():
    roles = _roles([C, Q, Q, S1, D, D, S2, P], [C, Q, S1, D, S2, P, P, P])
    table = torch.ones(1, 6, 6, dtype=torch.bool)
    table[0, D, Q] = False
    bias = expand_table(table, roles)
    assert bias.shape == (2, 1, 8, 8)
    removed = torch.isinf(bias[0, 0])
    assert removed[4:6, 1:3].all() and removed.sum() == 4  # exactly doc rows × query columns
    # every key of the query removed for query rows: they keep only their own diagonal
    table = torch.ones(1, 6, 6, dtype=torch.bool)
    table[0, Q, :P] = False
    bias = expand_table(table, roles)[0, 0]
    keep = ~torch.isinf(bias)
    assert keep[1].tolist() == [
        False,
        True,
        False,
        False,
        False,
        False,
        False,
        True,
    ]  # self + pad (model masks)
    assert keep[2, 2] and not keep[2, 1]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=36, max_size=36), st.integers(1, 4), st.integers(1, 3))
def test_no_row_is_ever_empty_and_softmax_has_no_nan(flags, n_query, n_doc):
    full = torch.tensor(flags, dtype=torch.bool).view(1, 6, 6)  # any table, padding rows/columns included
    row = [C] + [Q] * n_query + [S1] + [D] * n_doc + [S2]
    roles = _roles(row + [P] * 2)
    pad = torch.zeros(1, 1, 1, len(row) + 2)
    pad[..., len(row) :] = float("-inf")  # what the model's padding mask adds
    scores = torch.randn(1, 1, len(row) + 2, len(row) + 2) + expand_table(full, roles) + pad
    probs = torch.softmax(scores, -1)
    assert not torch.isnan(probs).any()


@pytest.mark.parametrize(
    "layers,k,final", [(12, 4, "mice-l4+3"), (6, 2, "mice-l2+3"), (3, 1, "mice-l1+2"), (1, 1, "mice-l1+1")]
)
def test_mice_k_is_a_third_of_the_depth(layers, k, final):
    assert default_mice_k(layers) == k and default_final_preset(layers) == final
    cm = compile_mask(MaskSpec([Rule("mice-step3")]), layers, 2)
    explicit = compile_mask(MaskSpec([Rule(f"mice-step3@{k}")]), layers, 2)
    assert torch.equal(cm.allowed, explicit.allowed)
    q, d = int(Role.QUERY), int(Role.DOC)
    assert not cm.allowed[k - 1, :, q, d].any() and (layers == k or cm.allowed[k, :, q, d].all())


def test_a_spec_made_for_another_model_shape_is_refused(tmp_path):
    spec = MaskSpec.remove("doc2query", layers="0-5").for_model(6, 12)
    again = MaskSpec.from_json(spec.to_json())
    assert again == spec and again.made_for == (6, 12)
    assert compile_mask(again, 6, 12).allowed.shape[0] == 6
    with pytest.raises(BadInput, match=r"made for 6 layers × 12 heads does not fit this model \(12 layers"):
        compile_mask(again, 12, 12)
    # a hand-written spec (no made_for) still clamps to any depth
    assert compile_mask(MaskSpec.remove("doc2query", layers="0-5"), 12, 12).allowed.shape[0] == 12
    # a MICE configuration read as a spec carries its model's shape
    doc = {"kind": "mice-config", "num_layers": 6, "num_heads": 12, "base_model": "m", "mask": spec.to_dict()}
    (tmp_path / "mice.json").write_text(json.dumps({**doc, "mask": {"rules": spec.to_dict()["rules"]}}))
    assert read_spec(tmp_path / "mice.json").made_for == (6, 12)
    with pytest.raises(BadInput, match="made_for"):
        MaskSpec.from_dict({"rules": [], "made_for": {"num_layers": 0, "num_heads": 12}})
    with pytest.raises(BadInput, match="unknown field 'layer'"):
        MaskSpec.from_dict({"rules": [], "layer": 3})
    with pytest.raises(BadInput, match="cannot combine"):
        spec + MaskSpec.remove("cls2doc").for_model(12, 12)
