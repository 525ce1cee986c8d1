"""The MICE comparison section reads a comparison table by its column names (reports/compare.py).

The tables here are made up (clearly not results), in the layout ``python -m ablations.compare`` writes
(``comparison`` + ``per_query``, manifest kind ``mice-compare``): they pin what the reader accepts, and
that the notes section marks a direction of the MICE paper that a study did not reproduce.
"""

from __future__ import annotations

import re
from html import unescape

import pandas as pd

from ablations.results import manifest, write_table
from reports.build import build_report
from reports.plots import pareto_front

MODELS = (  # name, reference, ms/query, bytes/doc, (dl19, scifact) nDCG@10, p vs reference (dl19, scifact)
    ("cross-encoder", True, 40.0, 0.0, (0.70, 0.60), (None, None)),
    ("mice-masked", False, 12.0, 0.0, (0.40, 0.30), (0.001, 0.002)),
    ("mice-retrained", False, 10.0, 120 * 1024.0, (0.68, 0.55), (0.2, 0.004)),
    ("maxsim", False, 8.0, 300 * 1024.0, (0.60, 0.50), (0.01, 0.01)),
    ("mice-step1", False, 41.0, 0.0, (0.695, 0.60), (0.6, 0.9)),  # masks on the full model: no faster
    ("mice-step2", False, 42.0, 0.0, (0.62, 0.58), (0.01, 0.3)),
)


def _comparison(tmp_path):
    rows, per_q = [], []
    for model, ref, lat, sto, vals, ps in MODELS:
        for (coll, domain), v, p, base in zip((("dl19", "ID"), ("scifact", "OOD")), vals, ps, MODELS[0][4]):
            rows.append(
                {
                    "model": model,
                    "collection": coll,
                    "domain": domain,
                    "measure": "nDCG@10",
                    "n": 4,
                    "mean": v,
                    "baseline_mean": base,
                    "delta": v - base,
                    "t": float("nan"),
                    "p": float("nan") if p is None else p,
                    "ci_low": v - base - 0.05,
                    "ci_high": v - base + 0.01,
                    "wins": 1,
                    "ties": 1,
                    "losses": 2,
                    "reference": ref,
                    "latency_ms_per_query": lat,
                    "storage_bytes_per_doc": sto,
                    "parameters": 22_700_000,
                }
            )
            per_q += [
                {
                    "model": model,
                    "collection": coll,
                    "domain": domain,
                    "query_id": q,
                    "measure": "nDCG@10",
                    "value": v,
                }
                for q in "abcd"
            ]
    meta = manifest(
        kind="mice-compare",
        reference="cross-encoder",
        in_domain=["dl19"],
        models={m[0]: f"made-up/{m[0]}" for m in MODELS},
        collections={
            c: {"name": c, "queries": 4, "candidates": 40, "judged_pairs": 9, "source": "x"}
            for c in ("dl19", "scifact")
        },
        latency={
            "collection": "dl19",
            "queries": ["1", "2"],
            "candidates_per_query": 100,
            "batch_size": 100,
            "torch_threads": 2,
        },
    )
    out = tmp_path / "results" / "mice"
    write_table(pd.DataFrame(per_q), out, "per_query", meta)
    write_table(pd.DataFrame(rows), out, "comparison", meta)
    return tmp_path / "results"


def _section(html, sid):
    return unescape(re.search(rf'<section id="{sid}".*?</section>', html, re.DOTALL).group(0))


def _rows(sec):
    return [
        re.findall(r"<td>(.*?)</td>", r, re.DOTALL) for r in re.findall(r"<tr>(.*?)</tr>", sec, re.DOTALL)
    ]


def test_comparison_section_and_directions(tmp_path):
    sections, html, _ = build_report(_comparison(tmp_path))
    state = {s.id: s.missing for s in sections}
    assert state["mice"] is None and state["notes"] is None
    setup = _section(html, "setup")
    assert "mice-retrained: made-up/mice-retrained" in setup and "<td>dl19, scifact</td>" in setup
    mice = _section(html, "mice")
    assert "dl19 (ID)" in mice and "scifact (OOD)" in mice
    assert "0.5500**" in mice  # p = 0.004 on the OOD collection
    assert "latency (latency_ms_per_query)" in mice and "storage (KiB/doc)" in mice
    assert "<td>120.0</td>" in mice and "<td>22.7</td>" in mice  # KiB per document, millions of parameters
    assert "mice/per_query.parquet" not in mice  # same kind, but not a comparison table
    assert mice.count("<img ") == 1  # the Pareto plot
    rows = [c for c in _rows(_section(html, "notes")) if c]

    def verdict(model, direction):
        found = [c[4] for c in rows if c[0] == model and c[1].startswith(direction)]
        assert len(found) == 1, (model, direction, rows)
        return found[0]

    assert verdict("mice-retrained", "ID: keeps most") == "yes"  # 0.68 ≥ 0.9 × 0.70
    assert verdict("mice-retrained", "OOD: generalises at least as well") == "NO"  # significantly worse
    assert (
        verdict("mice-retrained", "OOD: generalises better than late interaction (maxsim)") == "yes"
    )  # .55 > .5
    assert verdict("mice-retrained", "faster than the cross-encoder") == "yes"
    assert verdict("mice-retrained", "latency close to late interaction") == "yes"  # 10 ≤ 2 × 8 ms
    assert verdict("mice-masked", "without retraining, the mask loses ID effectiveness") == "yes"
    assert verdict("mice-masked", "faster than the cross-encoder") == "yes"  # latency is the architecture's
    assert verdict("mice-step1", "step 1 is harmless without retraining") == "yes"  # -0.5 points, p 0.6
    assert verdict("mice-step2", "step 2 costs ID effectiveness") == "yes"  # -8 points, p 0.01
    # a step is a mask on the full model: neither its speed nor its OOD score is one of the paper's claims
    assert {c[1] for c in rows if c[0].startswith("mice-step")} == {
        "step 1 is harmless without retraining",
        "step 2 costs ID effectiveness without retraining",
    }
    assert not any(c[0] == "maxsim" for c in rows)  # the paper's directions are about MICE
    notes = _section(html, "notes")
    assert f"{len(rows) - 1} of {len(rows)} checked directions reproduced" in notes
    assert "Not reproduced: mice-retrained: OOD: generalises at least as well as the cross-encoder" in notes


def test_comparison_without_reference_or_latency_says_so(tmp_path):
    res = _comparison(tmp_path)
    df = pd.read_parquet(res / "mice" / "comparison.parquet").drop(
        columns=["reference", "latency_ms_per_query"]
    )
    write_table(df, res / "mice", "comparison", manifest(kind="mice-compare"))
    sections, html, _ = build_report(res)
    state = {s.id: s.missing for s in sections}
    assert state["mice"] is None
    assert "marks no reference" in state["notes"]
    assert "has no latency column" in unescape(html)


def test_pareto_front_keeps_the_undominated():
    pts = pd.DataFrame({"lat": [1.0, 2.0, 3.0, 4.0, 2.5], "ndcg": [0.5, 0.7, 0.65, 0.72, 0.7]})
    assert pareto_front(pts, "lat", "ndcg")["lat"].tolist() == [1.0, 2.0, 4.0]


def test_masked_only_comparison_says_what_was_not_checked(tmp_path):
    res = _comparison(tmp_path)
    df = pd.read_parquet(res / "mice" / "comparison.parquet")
    write_table(
        df[df["model"] != "mice-retrained"], res / "mice", "comparison", manifest(kind="mice-compare")
    )
    _, html, _ = build_report(res)
    notes = _section(html, "notes")
    assert "has no retrained MICE model (only mice-masked, mice-step1, mice-step2)" in notes
    assert "ID: keeps most" not in notes
