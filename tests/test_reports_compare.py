"""The MICE comparison section reads a comparison table by its column names (reports/compare.py).

The table here is made up (clearly not a result): it pins the schema the reader accepts, and that the
notes section marks a direction of the MICE paper that a study did not reproduce.
"""

from __future__ import annotations

import re
from html import unescape

import pandas as pd

from ablations.results import manifest, write_table
from reports.build import build_report
from reports.plots import pareto_front


def _comparison(tmp_path, **meta):
    rows = []
    for model, ref, lat, sto, vals in (("cross-encoder", True, 40.0, 0.0, (0.70, 0.60)),
                                       ("mice-l2+3", False, 10.0, 120.0, (0.68, 0.55)),
                                       ("maxsim", False, 8.0, 300.0, (0.60, 0.50))):
        for (coll, domain), v in zip((("dl19", "ID"), ("scifact", "OOD")), vals):
            rows.append({"model": model, "collection": coll, "domain": domain, "measure": "nDCG@10", "mean": v,
                         "delta": 0.0 if ref else v - (0.70 if domain == "ID" else 0.60),
                         "p": float("nan") if ref else (0.2 if domain == "ID" else 0.004),
                         "ci_low": -0.05, "ci_high": 0.01, "reference": ref, "latency_ms": lat, "storage_mb": sto})
    write_table(pd.DataFrame(rows), tmp_path / "results" / "mice", "comparison",
                manifest(kind="mice-compare", model="made-up", **meta))
    return tmp_path / "results"


def test_comparison_section_and_directions(tmp_path):
    sections, html, _ = build_report(_comparison(tmp_path))
    state = {s.id: s.missing for s in sections}
    assert state["mice"] is None and state["notes"] is None
    mice = unescape(re.search(r'<section id="mice".*?</section>', html, re.DOTALL).group(0))
    assert "dl19 (ID)" in mice and "scifact (OOD)" in mice
    assert "0.5500**" in mice  # p = 0.004 on the OOD collection
    assert "latency (latency_ms)" in mice and "storage (storage_mb)" in mice
    assert mice.count("<img ") == 1  # the Pareto plot
    notes = unescape(re.search(r'<section id="notes".*?</section>', html, re.DOTALL).group(0))
    rows = re.findall(r"<tr>(.*?)</tr>", notes, re.DOTALL)  # the header row is <tr style=...>
    cells = [re.findall(r"<td>(.*?)</td>", r, re.DOTALL) for r in rows]
    verdict = {(c[0], c[1].split(":")[0]): c[4] for c in cells}
    assert verdict[("mice-l2+3", "ID")] == "yes"  # 0.68 ≥ 0.9 × 0.70
    assert verdict[("mice-l2+3", "OOD")] == "NO"  # significantly worse out of domain
    assert verdict[("maxsim", "ID")] == "NO"  # 0.60 < 0.63
    assert verdict[("mice-l2+3", "faster than the cross-encoder (paper")] == "yes"


def test_comparison_without_reference_or_latency_says_so(tmp_path):
    res = _comparison(tmp_path)
    df = pd.read_parquet(res / "mice" / "comparison.parquet").drop(columns=["reference", "latency_ms"])
    write_table(df, res / "mice", "comparison", manifest(kind="mice-compare"))
    sections, html, _ = build_report(res)
    state = {s.id: s.missing for s in sections}
    assert state["mice"] is None
    assert "marks no reference" in state["notes"]
    assert "has no latency column" in unescape(html)


def test_pareto_front_keeps_the_undominated():
    pts = pd.DataFrame({"lat": [1.0, 2.0, 3.0, 4.0, 2.5], "ndcg": [0.5, 0.7, 0.65, 0.72, 0.7]})
    assert pareto_front(pts, "lat", "ndcg")["lat"].tolist() == [1.0, 2.0, 4.0]
