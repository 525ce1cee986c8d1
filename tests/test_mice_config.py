"""MICE configurations: presets, JSON round-trip, schema checks, per-layer tables."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ablations.masking.masks import MaskSpec, Rule
from ablations.mice.config import SCHEMA_VERSION, MiceConfig, preset, spec_from_interactions
from probe.errors import BadInput


def test_presets_resolve_to_the_paper_steps():
    final = preset("mice-l4+3", 12, 12, "minilm-l12")
    assert (final.merge_layer, final.drop_layer) == (4, 7)
    rows = final.interactions()
    assert "query2doc" in rows[3]["removed"] and "query2doc" not in rows[4]["removed"]
    assert all("doc2query" in r["removed"] for r in rows[:7])
    assert all(r.get("dropped") for r in rows[7:]) and len(rows) == 12
    step1 = preset("mice-step1", 6, 12, "m").interactions()[0]["removed"]
    assert {"cls2doc", "cls2sep2", "doc2cls", "doc2sep1", "query2sep2", "sep12query"} <= set(step1)
    assert "doc2query" not in step1 and "cls2query" not in step1
    with pytest.raises(BadInput, match="unknown MICE preset"):
        preset("mice-step7", 6, 12, "m")
    with pytest.raises(BadInput, match="exceeds the model's 6 layers"):
        preset("mice-l4+3", 6, 12, "m")
    twelve, six = preset("mice-final", 12, 12, "m"), preset("mice-final", 6, 12, "m")
    assert (twelve.merge_layer, twelve.drop_layer) == (4, 7) and twelve.source["preset"] == "mice-l4+3"
    assert (six.merge_layer, six.drop_layer) == (2, 5) and six.source["preset"] == "mice-l2+3"
    assert twelve.to_json() == preset("mice-l4+3", 12, 12, "m").to_json()


@pytest.mark.parametrize(
    "cfg",
    [
        preset("mice-l2+3", 6, 12, "reference", source={"from": "x.json"}),
        preset("mice-step2", 6, 12, "reference", doc_positions="joint", max_length=128),
        MiceConfig(
            "m",
            4,
            4,
            mask=MaskSpec([Rule("cls2doc", "1-2", heads="0,3"), Rule("doc2query")]),
            merge_layer=1,
            drop_layer=3,
            cache_dtype="float16",
            plan="split",
        ),
    ],
)
def test_json_round_trip_is_lossless(cfg, tmp_path):
    again = MiceConfig.from_json(cfg.to_json())
    assert again == cfg and again.to_json() == cfg.to_json()
    cfg.save(tmp_path / "mice.json")
    assert MiceConfig.load(tmp_path) == cfg  # a folder holding mice.json works too
    data = json.loads(cfg.to_json())
    assert data["schema_version"] == SCHEMA_VERSION and data["kind"] == "mice-config"
    assert len(data["interactions"]) == cfg.num_layers


def test_other_schema_versions_and_bad_fields_are_refused():
    data = json.loads(preset("mice-l2+3", 6, 12, "reference").to_json())
    with pytest.raises(BadInput, match=r"schema_version 2; this toolkit reads MICE config schema_version 1"):
        MiceConfig.from_dict({**data, "schema_version": 2})
    with pytest.raises(BadInput, match="schema_version None"):
        MiceConfig.from_dict({k: v for k, v in data.items() if k != "schema_version"})
    with pytest.raises(BadInput, match="unknown field 'merge'"):
        MiceConfig.from_dict({**data, "merge": 3})
    with pytest.raises(BadInput, match="drop_layer 9 must be in 1..6"):
        MiceConfig.from_dict({**data, "drop_layer": 9})
    with pytest.raises(BadInput, match=r"merge_layer 6 must be in 0..drop_layer \(5\)"):
        MiceConfig.from_dict({**data, "merge_layer": 6})
    with pytest.raises(BadInput, match="disagrees with the mask"):
        MiceConfig.from_dict({**data, "drop_layer": 6})
    with pytest.raises(BadInput, match="not valid JSON"):
        MiceConfig.from_json("{nope")
    with pytest.raises(BadInput, match="doc_positions 'relative'"):
        MiceConfig.from_dict({**data, "doc_positions": "relative"})


def test_a_hand_written_per_layer_table_is_accepted():
    table = [
        {"layer": 0, "removed": ["doc2query", "query2doc"]},
        {"layer": 1, "removed_by_head": [["cls2doc"], [], ["cls2doc"], []]},
        {"layer": 2, "removed": []},
        {"layer": 3, "dropped": True},
    ]
    cfg = MiceConfig.from_dict(
        {"schema_version": 1, "base_model": "m", "num_layers": 4, "num_heads": 4, "interactions": table}
    )
    assert cfg.drop_layer == 3
    rows = cfg.interactions()
    assert rows[0]["removed"] == ["query2doc", "doc2query"] and rows[3] == {"layer": 3, "dropped": True}
    assert rows[1]["removed_by_head"][0] == ["cls2doc"] and rows[1]["removed_by_head"][1] == []
    with pytest.raises(BadInput, match="has 3 layers but num_layers is 4"):
        MiceConfig.from_dict(
            {
                "schema_version": 1,
                "base_model": "m",
                "num_layers": 4,
                "num_heads": 4,
                "mask": MaskSpec().to_dict(),
                "interactions": table[:3],
            }
        )


ROLES = ["cls", "query", "sep1", "doc", "sep2"]
PAIRS = [f"{s}2{t}" for s in ROLES for t in ROLES]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sets(st.sampled_from(PAIRS), max_size=8), min_size=4, max_size=4),
    st.integers(1, 4),
    st.sampled_from(["joint", "canonical"]),
)
def test_any_per_layer_table_round_trips(sets, drop, positions):
    table = [{"layer": i, "removed": sorted(s)} for i, s in enumerate(sets)]
    cfg = MiceConfig("m", 4, 4, mask=spec_from_interactions(table), drop_layer=drop, doc_positions=positions)
    again = MiceConfig.from_json(cfg.to_json())
    assert again == cfg
    assert bool((again.allowed() == cfg.allowed()).all())
    for i, row in enumerate(cfg.interactions()[:drop]):
        assert set(row["removed"]) == sets[i]
