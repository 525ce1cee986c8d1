"""Read the MICE comparison table(s) (issue #5) tolerantly: effectiveness ID/OOD, latency, storage.

The comparison is written by another tool; this module recognises its columns by name instead of
requiring one exact schema, and says what it could not find. Expected (any of the aliases):

==============  =============================================================================
model           ``model``, ``system``, ``variant``, ``scorer``, ``name``, ``label``
collection      ``collection``, ``dataset``
domain          ``domain`` or ``split`` (``ID`` / ``OOD``); else the manifest's ``in_domain`` list
effectiveness   long: ``measure`` + ``mean`` / ``value``; wide: a column named like ``nDCG@10``
significance    ``p`` (vs the reference model), ``ci_low``, ``ci_high``, ``delta``
reference       ``reference`` / ``is_reference`` / ``baseline`` (bool) or the manifest's ``reference``
latency         a column whose name contains ``latency`` or ``ms_per`` (milliseconds)
storage         a column whose name contains ``storage``, ``bytes``, ``index_mb`` or ``_mb``
==============  =============================================================================
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import plots
from .blocks import Figure, Heading, Paragraph, Table, fmt, fmt_p, stars
from .discover import Source

MODEL_COLS = ("model", "system", "variant", "scorer", "name", "label")
COLLECTION_COLS = ("collection", "dataset")
DOMAIN_COLS = ("domain", "split")
VALUE_COLS = ("mean", "value")
REFERENCE_COLS = ("reference", "is_reference", "baseline", "is_baseline")
#: What this report checks against, with the criterion it applies (stated in the report).
ID_KEEP_RATIO = 0.9


def _first(df: pd.DataFrame, names) -> str | None:
    for n in names:
        if n in df.columns:
            return n
    return None


def _like(df: pd.DataFrame, needles) -> str | None:
    for c in df.columns:
        lc = str(c).lower()
        if any(n in lc for n in needles):
            return c
    return None


def normalise(src: Source, measure: str) -> tuple[pd.DataFrame, list[str]]:
    """The comparison as one row per model × collection: model, collection, domain, value, p, ci_low,
    ci_high, delta, reference, latency_ms, storage (and notes on what was not found)."""
    df = src.read()
    notes = []
    mcol = _first(df, MODEL_COLS)
    if mcol is None:
        raise_cols(src, df, "a model column (" + ", ".join(MODEL_COLS) + ")")
    ccol = _first(df, COLLECTION_COLS)
    if "measure" in df.columns:
        measures = list(dict.fromkeys(df["measure"].astype(str)))
        use = measure if measure in measures else (measures[0] if measures else measure)
        if use != measure:
            notes.append(f"{measure} not in {src.rel}; showing {use}")
        df = df[df["measure"].astype(str) == use]
        vcol = _first(df, VALUE_COLS)
    else:
        use = measure
        vcol = measure if measure in df.columns else _like(df, ("ndcg",))
    if vcol is None:
        raise_cols(src, df, f"an effectiveness column (measure + mean/value, or {measure})")
    out = pd.DataFrame({"model": df[mcol].astype(str),
                        "collection": df[ccol].astype(str) if ccol else "–",
                        "value": pd.to_numeric(df[vcol], errors="coerce")})
    dcol = _first(df, DOMAIN_COLS)
    in_domain = src.manifest.get("in_domain") or src.manifest.get("id_collections")
    if dcol:
        out["domain"] = df[dcol].astype(str).str.upper().to_numpy()
    elif in_domain and ccol:
        out["domain"] = np.where(out["collection"].isin(list(in_domain)), "ID", "OOD")
    else:
        out["domain"] = "–"
        notes.append(f"{src.rel} says nothing of which collections are in-domain")
    for c in ("p", "ci_low", "ci_high", "delta"):
        out[c] = pd.to_numeric(df[c], errors="coerce").to_numpy() if c in df.columns else np.nan
    rcol = _first(df, REFERENCE_COLS)
    ref_name = src.manifest.get("reference")
    if rcol:
        out["reference"] = df[rcol].astype(bool).to_numpy()
    elif ref_name:
        out["reference"] = out["model"] == str(ref_name)
    else:
        out["reference"] = False
    lat = _like(df, ("latency", "ms_per"))
    sto = _like(df, ("storage", "bytes", "index_mb", "_mb"))
    out["latency_ms"] = pd.to_numeric(df[lat], errors="coerce").to_numpy() if lat else np.nan
    out["storage"] = pd.to_numeric(df[sto], errors="coerce").to_numpy() if sto else np.nan
    out.attrs.update(measure=use, latency_col=lat, storage_col=sto)
    if lat is None:
        notes.append(f"{src.rel} has no latency column")
    if sto is None:
        notes.append(f"{src.rel} has no storage column")
    return out.sort_values(["domain", "collection", "model"], kind="stable").reset_index(drop=True), notes


def raise_cols(src: Source, df: pd.DataFrame, what: str):
    from probe.errors import BadInput

    raise BadInput(f"{src.rel} has no {what}; its columns: {', '.join(map(str, df.columns))}")


def comparison_blocks(srcs: list[Source], opts) -> list:
    blocks: list = []
    for src in srcs:
        norm, notes = normalise(src, opts.measure)
        measure = norm.attrs["measure"]
        blocks.append(Heading(f"{src.rel}"))
        eff = norm.assign(cell=[f"{fmt(v)}{stars(p)}" for v, p in zip(norm["value"], norm["p"])])
        grid = eff.pivot_table(index="model", columns=["domain", "collection"], values="cell", aggfunc="first",
                               sort=True)
        grid.columns = [f"{c} ({d})" for d, c in grid.columns]
        grid = grid.reset_index().fillna("–")
        blocks.append(Table(grid, f"{measure} per model and collection (ID = in-domain, OOD = out-of-domain); "
                            "stars: paired t-test against the reference model, * p<0.05, ** p<0.01, *** p<0.001.",
                            [src.rel]))
        if norm["p"].notna().any():
            sig = norm[norm["p"].notna()]
            blocks.append(Table(pd.DataFrame({
                "model": sig["model"], "collection": sig["collection"], "domain": sig["domain"],
                measure: sig["value"].map(fmt), "Δ vs reference": sig["delta"].map(lambda v: fmt(v, signed=True)),
                "95% CI": [f"[{fmt(lo, signed=True)}, {fmt(hi, signed=True)}]"
                           for lo, hi in zip(sig["ci_low"], sig["ci_high"])],
                "p": sig["p"].map(fmt_p)}).reset_index(drop=True),
                "Differences from the reference model with their confidence intervals.", [src.rel]))
        cost = norm.groupby("model", sort=True).agg(latency_ms=("latency_ms", "mean"), storage=("storage", "mean"),
                                                   value=("value", "mean")).reset_index()
        if cost[["latency_ms", "storage"]].notna().any().any():
            blocks.append(Table(pd.DataFrame({
                "model": cost["model"],
                f"latency ({norm.attrs['latency_col'] or '–'})": cost["latency_ms"].map(lambda v: fmt(v, 2)),
                f"storage ({norm.attrs['storage_col'] or '–'})": cost["storage"].map(lambda v: fmt(v, 2)),
                f"mean {measure}": cost["value"].map(fmt)}),
                "Latency and storage per model (mean over collections where given per collection).", [src.rel]))
            pts = cost.dropna(subset=["latency_ms", "value"])
            if len(pts) >= 2:
                blocks.append(Figure(plots.pareto_plot(pts, "latency_ms", "value", "model",
                                                       f"latency ({norm.attrs['latency_col']})",
                                                       f"mean {measure}"),
                                     f"Latency against mean {measure}: the Pareto front joins the models no other "
                                     "model beats on both.", (6.5, 3.6), [src.rel], "latency nDCG pareto plot"))
            else:
                blocks.append(Paragraph(f"missing: the Pareto plot needs latency and {measure} for at least two "
                                        f"models; {src.rel} has {len(pts)}.", "missing"))
        else:
            blocks.append(Paragraph(f"missing: {src.rel} has no latency or storage column; no cost table and no "
                                    "Pareto plot.", "missing"))
        for n in notes:
            blocks.append(Paragraph(n + ".", "note"))
    return blocks


def direction_checks(srcs: list[Source], opts) -> tuple[Table | None, str]:
    """Compare each non-reference model with the reference on the paper's three directions."""
    if not srcs:
        return None, ""
    rows, notes = [], []
    used = []
    for src in srcs:
        norm, _ = normalise(src, opts.measure)
        ref = norm[norm["reference"]]
        if ref.empty:
            notes.append(f"{src.rel} marks no reference (cross-encoder) model")
            continue
        used.append(src.rel)
        ref_model = ref["model"].iloc[0]
        for model, part in norm[~norm["reference"]].groupby("model", sort=True):
            for domain in ("ID", "OOD"):
                mine = part[part["domain"] == domain]
                theirs = ref[ref["domain"] == domain]
                if mine.empty or theirs.empty:
                    continue
                m, r = float(mine["value"].mean()), float(theirs["value"].mean())
                worse_sig = bool(((mine["p"] < opts.alpha) & (mine["value"] < mine["collection"].map(
                    theirs.set_index("collection")["value"]))).any())
                if domain == "ID":
                    ok = m >= ID_KEEP_RATIO * r
                    claim = f"ID: keeps most of the cross-encoder's {norm.attrs['measure']}"
                    crit = f"MICE ≥ {ID_KEEP_RATIO:g} × reference (mean over ID collections)"
                else:
                    ok = m >= r or not worse_sig
                    claim = "OOD: generalises at least as well as the cross-encoder"
                    crit = f"MICE ≥ reference, or no collection significantly worse (p < {opts.alpha:g})"
                rows.append({"model": model, "direction": claim, "criterion": crit,
                             "observed": f"{fmt(m)} vs {ref_model} {fmt(r)} ({m / r:.1%})" if r else f"{fmt(m)}",
                             "reproduced": "yes" if ok else "NO", "source": src.rel})
            lat_m, lat_r = part["latency_ms"].mean(), ref["latency_ms"].mean()
            if np.isfinite(lat_m) and np.isfinite(lat_r) and lat_m > 0:
                rows.append({"model": model, "direction": "faster than the cross-encoder (paper: about 4×)",
                             "criterion": "latency ratio reference / MICE > 1",
                             "observed": f"{lat_r / lat_m:.2f}× ({fmt(lat_m, 2)} vs {fmt(lat_r, 2)} ms)",
                             "reproduced": "yes" if lat_r / lat_m > 1 else "NO", "source": src.rel})
    if not rows:
        return None, "; ".join(notes) or "the comparison tables hold no ID/OOD rows to compare"
    table = Table(pd.DataFrame(rows), "Directions of the MICE paper, checked on this study's numbers. 'NO' marks "
                  "a direction this study did not reproduce.", sorted(set(used)))
    return table, "; ".join(notes)
