"""The report's first section: what was removed, what it cost (with significance), and what reproduced
from the MICE paper, before any detail. Built from the same tables as the later sections.

One significance rule throughout the report: an effect is *significant* when the paired two-sided t-test
over queries gives p < ``alpha`` (default 0.05). The seeded percentile-bootstrap 95% interval of the mean
Δ is shown for the effect's size; near the boundary it can exclude 0 while p ≥ ``alpha`` (the bootstrap
interval is narrower than the t interval on few queries), and such an effect is *not* called significant.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .blocks import Paragraph, Section, Table, fmt, fmt_ci, fmt_p
from .discover import Results

#: Below this many queries an effect is flagged as measured on few queries (low power, wide intervals).
FEW_QUERIES = 20


def significance_rule(alpha: float) -> str:
    return (
        f"Significance rule (the whole report): an effect is significant when the paired two-sided t-test "
        f"over queries gives p < {alpha:g}. The bootstrap 95% interval of the mean Δ gives its size; where "
        f"it excludes 0 but p ≥ {alpha:g} (it is narrower than the t interval on few queries) the effect is "
        "not called significant, and the tables say so."
    )


def _verdict(row, alpha: float) -> str:
    p = float(row["p"]) if pd.notna(row.get("p")) else float("nan")
    lo, hi = row.get("ci_low"), row.get("ci_high")
    n = int(row["n"]) if pd.notna(row.get("n")) else 0
    if np.isnan(p):
        out = "no test"
    elif p < alpha:
        out = f"significant (p {fmt_p(p)})"
    else:
        out = f"not significant (p {fmt_p(p)})"
        if pd.notna(lo) and pd.notna(hi) and (float(lo) > 0 or float(hi) < 0):
            out += "; the bootstrap CI excludes 0, the t-test does not"
    if 0 < n < FEW_QUERIES:
        out += f"; only {n} queries"
    return out


def findings_section(results: Results, opts) -> Section:
    """A summary of findings: largest ablation effects, the minimal set, the MICE comparison against the
    reference (and the paper's numbers where a paper table exists), the directions that reproduced."""
    from .compare import direction_checks, normalise
    from .discover import side_file
    from .sections import RUN_KIND, SEARCH_KIND, SWEEP_KIND, compare_sources

    sec = Section("findings", "Summary of findings")
    sec.add(Paragraph(significance_rule(opts.alpha)))
    found = False

    # ablations: every run and sweep cell, the largest |Δ| first
    pooled = []
    for src in [
        *results.find(kind=RUN_KIND, table="summary"),
        *results.find(kind=SWEEP_KIND, table="summary"),
    ]:
        df = src.read()
        if df.empty or "measure" not in df.columns:
            continue
        part = df[df["measure"] == opts.measure]
        pooled.append(part.assign(_source=src.rel_folder))
    if pooled:
        found = True
        allrows = pd.concat(pooled, ignore_index=True)
        if "run_id" in allrows.columns:
            allrows = allrows.drop_duplicates("run_id")
        nsig = int((allrows["p"] < opts.alpha).sum())
        top = allrows.assign(_abs=allrows["delta"].abs()).sort_values("_abs", ascending=False).head(5)
        sec.add(
            Paragraph(
                f"Ablations: {len(allrows)} masks measured ({opts.measure}); {nsig} changed it "
                "significantly. The largest effects:"
            )
        )
        sec.add(
            Table(
                pd.DataFrame(
                    {
                        "removed": top["spec_label"].astype(str),
                        "collection": top["collection"].astype(str),
                        "Δ": top["delta"].map(lambda v: fmt(v, signed=True)),
                        "95% CI": [fmt_ci(lo, hi) for lo, hi in zip(top["ci_low"], top["ci_high"])],
                        "verdict": [_verdict(r, opts.alpha) for _, r in top.iterrows()],
                    }
                ),
                f"Largest |Δ {opts.measure}| (ablated − full model, mean over queries) of every run and "
                "sweep cell; details in the Ablations section.",
                sorted(set(top["_source"])),
            )
        )

    # the minimal interaction set
    for src in results.find(kind=SEARCH_KIND, table="steps"):
        doc = src.manifest.get("search") or side_file(src, "search.json") or {}
        final = doc.get("final") or {}
        if not final:
            continue
        found = True
        surviving = (
            ", ".join(f"{u['interaction']}[{u['layers']}]" for u in doc.get("surviving", [])) or "none"
        )
        sec.add(
            Paragraph(
                f"Minimal set ({src.rel_folder}/): removing {doc.get('removed_label') or 'nothing'} costs "
                f"Δ {fmt(final.get('delta'), signed=True)} {doc.get('measure', opts.measure)} "
                f"({_verdict({**final, 'n': final.get('n', 0)}, opts.alpha)}); surviving: {surviving}."
            )
        )

    # the MICE comparison against the reference, with the paper's numbers when a paper table exists
    for src in compare_sources(results):
        norm, _ = normalise(src, opts.measure)
        rows = norm[~norm["reference"]]
        if rows.empty:
            continue
        found = True
        theirs = {}
        if (src.folder / "paper.parquet").is_file():  # python -m ablations.paper's table beside it
            tab = pd.read_parquet(src.folder / "paper.parquet")
            theirs = {
                (m, c): v
                for m, c, v in zip(tab["model"], tab["collection"], tab["paper_ndcg10"])
                if pd.notna(v)
            }
        ref = norm[norm["reference"]].set_index("collection")["value"]
        lines = []
        for _, r in rows.iterrows():
            base = ref.get(r["collection"], np.nan)
            paper_note = ""
            if (r["model"], r["collection"]) in theirs:
                paper_note = f", paper {fmt(theirs[(r['model'], r['collection'])], 3)}"
            lines.append(
                {
                    "model": r["model"],
                    "collection": f"{r['collection']} ({r['domain']})",
                    opts.measure: fmt(r["value"]) + paper_note,
                    "Δ vs reference": fmt(r["value"] - base, signed=True) if pd.notna(base) else "–",
                    "verdict": _verdict({**r.to_dict(), "n": np.nan}, opts.alpha),
                }
            )
        sec.add(
            Table(
                pd.DataFrame(lines),
                f"Every scorer against the reference cross-encoder ({src.rel_folder}/), per collection"
                + (" with the MICE paper's number where it reports one" if theirs else "")
                + "; latency and storage in the MICE comparison section.",
                [src.rel],
            )
        )
    checks, summary, _ = direction_checks(compare_sources(results), opts)
    if checks is not None:
        found = True
        sec.add(Paragraph("The paper's directions: " + summary + " (details in the Notes section)"))
    if not found:
        sec.missing = (
            f"no ablation, search or comparison results under {results.label} to summarise "
            "(see the sections below for the commands that make them)"
        )
    return sec
