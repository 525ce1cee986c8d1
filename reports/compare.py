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

import re

import numpy as np
import pandas as pd

from . import plots
from .blocks import Figure, Heading, Paragraph, Table, fmt, fmt_ci, fmt_p, stars
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
    out = pd.DataFrame(
        {
            "model": df[mcol].astype(str),
            "collection": df[ccol].astype(str) if ccol else "–",
            "value": pd.to_numeric(df[vcol], errors="coerce"),
        }
    )
    dcol = _first(df, DOMAIN_COLS)
    in_domain = src.manifest.get("in_domain") or src.manifest.get("id_collections")
    if dcol:
        out["domain"] = df[dcol].astype(str).str.upper().to_numpy()
    elif in_domain and ccol:
        out["domain"] = np.where(out["collection"].isin(list(in_domain)), "ID", "OOD")
    else:
        out["domain"] = "–"
        notes.append(f"{src.rel} says nothing of which collections are in-domain")
    for c in ("p", "ci_low", "ci_high", "delta", "wins", "ties", "losses"):
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
    out["parameters"] = (
        pd.to_numeric(df["parameters"], errors="coerce").to_numpy() if "parameters" in df else np.nan
    )
    out.attrs.update(measure=use, latency_col=lat, storage_col=sto)
    if lat is None:
        notes.append(f"{src.rel} has no latency column")
    if sto is None:
        notes.append(f"{src.rel} has no storage column")
    return out.sort_values(["domain", "collection", "model"], kind="stable").reset_index(drop=True), notes


def raise_cols(src: Source, df: pd.DataFrame, what: str):
    from probe.errors import BadInput

    raise BadInput(f"{src.rel} has no {what}; its columns: {', '.join(map(str, df.columns))}")


def _storage_label(col: str | None) -> tuple[str, float]:
    """Column header and divisor for storage: bytes are shown in KiB."""
    if col is None:
        return "storage", 1.0
    if "bytes" in col.lower():
        return f"storage (KiB{'/doc' if 'doc' in col.lower() else ''})", 1024.0
    return f"storage ({col})", 1.0


def comparison_blocks(srcs: list[Source], opts) -> list:
    blocks: list = []
    for src in srcs:
        norm, notes = normalise(src, opts.measure)
        measure = norm.attrs["measure"]
        blocks.append(Heading(f"{src.rel}"))
        models = src.manifest.get("models")
        if isinstance(models, dict) and models:
            blocks.append(
                Table(
                    pd.DataFrame(
                        {"model": list(models), "weights / configuration": [str(v) for v in models.values()]}
                    ),
                    "The models compared (from the manifest).",
                    [f"{src.rel_folder}/{src.table}.json"],
                )
            )
        eff = norm.assign(cell=[f"{fmt(v)}{stars(p)}" for v, p in zip(norm["value"], norm["p"])])
        grid = eff.pivot_table(
            index="model", columns=["domain", "collection"], values="cell", aggfunc="first", sort=True
        )
        grid.columns = [f"{c} ({d})" for d, c in grid.columns]
        grid = grid.reset_index().fillna("–")
        ref = sorted(set(norm.loc[norm["reference"], "model"]))
        blocks.append(
            Table(
                grid,
                f"{measure} per model and collection (ID = in-domain, OOD = out-of-domain); "
                f"stars: paired t-test against the reference model ({', '.join(ref) or 'none marked'}), "
                "* p<0.05, ** p<0.01, *** p<0.001.",
                [src.rel],
            )
        )
        sig = norm[~norm["reference"] & norm["delta"].notna()]
        if len(sig):
            table = pd.DataFrame(
                {
                    "model": sig["model"],
                    "collection": sig["collection"],
                    "domain": sig["domain"],
                    measure: sig["value"].map(fmt),
                    "Δ vs reference": sig["delta"].map(lambda v: fmt(v, signed=True)),
                    "95% CI": [fmt_ci(lo, hi) for lo, hi in zip(sig["ci_low"], sig["ci_high"])],
                    "p": sig["p"].map(fmt_p),
                    "sig.": sig["p"].map(stars),
                }
            )
            if sig["wins"].notna().all():
                table["W/T/L"] = [
                    f"{int(w)}/{int(t)}/{int(lo)}"
                    for w, t, lo in zip(sig["wins"], sig["ties"], sig["losses"])
                ]
            table = table.sort_values(["domain", "collection", "model"], kind="stable").reset_index(drop=True)
            blocks.append(
                Table(
                    table,
                    "Differences from the reference model: mean per-query Δ, bootstrap 95% CI, "
                    "paired t-test.",
                    [src.rel],
                )
            )
        cost = (
            norm.groupby("model", sort=True)
            .agg(
                latency_ms=("latency_ms", "mean"),
                storage=("storage", "mean"),
                parameters=("parameters", "mean"),
            )
            .reset_index()
        )
        if cost[["latency_ms", "storage"]].notna().any().any():
            slabel, div = _storage_label(norm.attrs["storage_col"])
            cols = {
                "model": cost["model"],
                f"latency ({norm.attrs['latency_col'] or '–'})": cost["latency_ms"].map(lambda v: fmt(v, 1)),
                slabel: (cost["storage"] / div).map(lambda v: fmt(v, 1)),
            }
            if cost["parameters"].notna().any():
                cols["parameters (M)"] = (cost["parameters"] / 1e6).map(lambda v: fmt(v, 1))
            lat = src.manifest.get("latency") or {}
            how = ""
            if lat:
                how = (
                    f" Latency: {lat.get('collection', '–')}, {len(lat.get('queries', []))} queries of "
                    f"{lat.get('candidates_per_query', '–')} candidates, batch {lat.get('batch_size', '–')}, "
                    f"{lat.get('torch_threads', '–')} torch threads (manifest); measured there once, so the "
                    "same number stands for every collection."
                )
            blocks.append(Table(pd.DataFrame(cols), "Latency and storage per model." + how, [src.rel]))
            pts = (
                norm.groupby(["domain", "model"], sort=True)
                .agg(latency_ms=("latency_ms", "mean"), value=("value", "mean"))
                .reset_index()
                .dropna(subset=["latency_ms", "value"])
            )
            if pts["model"].nunique() >= 2:
                blocks.append(
                    Figure(
                        plots.pareto_plot(
                            pts,
                            "latency_ms",
                            "value",
                            "model",
                            f"latency ({norm.attrs['latency_col']})",
                            f"{measure} (mean over the domain's collections)",
                            group="domain",
                        ),
                        f"Latency against {measure}, in-domain and out-of-domain: the line joins the "
                        "models no other model beats on both.",
                        (6.5, 3.8),
                        [src.rel],
                        "latency nDCG pareto plot",
                    )
                )
            else:
                blocks.append(
                    Paragraph(
                        f"missing: the Pareto plot needs latency and {measure} for at least two "
                        f"models; {src.rel} has {pts['model'].nunique()}.",
                        "missing",
                    )
                )
        else:
            blocks.append(
                Paragraph(
                    f"missing: {src.rel} has no latency or storage column; no cost table and no Pareto plot.",
                    "missing",
                )
            )
        for n in notes:
            blocks.append(Paragraph(n + ".", "note"))
    return blocks


LATE_INTERACTION = ("maxsim", "lite", "colbert")
#: The late-interaction latency MICE should match (paper: "matching late-interaction models like ColBERT").
MATCH_RATIO = 2.0


def _is_mice(name: str) -> bool:
    return "mice" in name.lower()


#: Steps 0-1 of the paper are "harmless" when every ID collection stays within this many nDCG points.
STEP_HARMLESS = 0.01


def _step(name: str) -> int | None:
    """The MICE step a row masks (``mice-step2``, ``mice-step3@4``), or None for any other row."""
    m = re.fullmatch(r"mice-step(\d+)(@\d+)?", name.lower())
    return int(m.group(1)) if m else None


def _is_late(name: str) -> bool:
    return any(k in name.lower() for k in LATE_INTERACTION)


def direction_checks(srcs: list[Source], opts) -> tuple[Table | None, str, str]:
    """Check the MICE paper's directions on each comparison table (criteria stated in the table).

    Returns the table (None when nothing could be checked), a one-paragraph summary naming every direction
    that did not reproduce, and notes on what could not be checked."""
    if not srcs:
        return None, "", ""
    rows, notes, used = [], [], []

    def add(model, claim, crit, observed, ok, src):
        rows.append(
            {
                "model": model,
                "direction": claim,
                "criterion": crit,
                "observed": observed,
                "reproduced": "yes" if ok else "NO",
                "source": src.rel,
            }
        )

    for src in srcs:
        norm, _ = normalise(src, opts.measure)
        measure = norm.attrs["measure"]
        ref = norm[norm["reference"]]
        if ref.empty:
            notes.append(f"{src.rel} marks no reference (cross-encoder) model")
            continue
        ref_model = ref["model"].iloc[0]
        mice = sorted(m for m in norm["model"].unique() if _is_mice(m) and m not in set(ref["model"]))
        late = sorted(m for m in norm["model"].unique() if _is_late(m))
        if not mice:
            notes.append(f"{src.rel} has no MICE model (a model named mice*)")
            continue
        used.append(src.rel)
        if all("masked" in m.lower() or _step(m) is not None for m in mice):
            notes.append(
                f"{src.rel} has no retrained MICE model (only {', '.join(mice)}): the paper's ID and OOD "
                "effectiveness directions, reported for the retrained model, are not checked here "
                "(train one with python -m ablations.retrain and pass it to ablations.compare --mice)"
            )

        def dom(model, domain, norm=norm):
            part = norm[(norm["model"] == model) & (norm["domain"] == domain)]
            return part, (float(part["value"].mean()) if len(part) else float("nan"))

        def latency(model, norm=norm):
            return float(norm.loc[norm["model"] == model, "latency_ms"].mean())

        for model in mice:
            id_part, m_id = dom(model, "ID")
            _, r_id = dom(ref_model, "ID")
            lat_m, lat_r = latency(model), latency(ref_model)
            faster = np.isfinite(lat_m) and np.isfinite(lat_r) and lat_m > 0
            # significantly below the reference on some ID collection
            worse = bool(((id_part["p"] < opts.alpha) & (id_part["delta"] < 0)).any())
            step = _step(model)
            if step is not None:
                # a step is a mask on the full model, not retrained and no faster: the paper's claims about
                # it are effectiveness only (steps 0-1 cost nothing, from step 2 on the mask costs)
                if not (np.isfinite(m_id) and np.isfinite(r_id)):
                    continue
                if step <= 1:
                    within = bool((id_part["delta"].abs() <= STEP_HARMLESS).all())
                    add(
                        model,
                        f"step {step} is harmless without retraining",
                        f"within {STEP_HARMLESS * 100:g} point of the reference on every ID collection "
                        f"and not below it with p < {opts.alpha:g}",
                        f"{fmt(m_id)} vs {ref_model} {fmt(r_id)} (largest |Δ| "
                        f"{fmt(float(id_part['delta'].abs().max()))}, p {fmt_p(id_part['p'].min())})",
                        within and not worse,
                        src,
                    )
                else:
                    add(
                        model,
                        f"step {step} costs ID effectiveness without retraining",
                        f"below the reference with p < {opts.alpha:g} on an ID collection",
                        f"{fmt(m_id)} vs {ref_model} {fmt(r_id)} (p {fmt_p(id_part['p'].min())})",
                        m_id < r_id and worse,
                        src,
                    )
                continue
            if "masked" in model.lower():
                # the configuration on the cross-encoder's weights, not retrained: the paper retrains because
                # masking alone loses effectiveness. Latency is the architecture's, retrained or not.
                if np.isfinite(m_id) and np.isfinite(r_id):
                    add(
                        model,
                        "without retraining, the mask loses ID effectiveness (why the paper retrains)",
                        f"below the reference with p < {opts.alpha:g} on an ID collection",
                        f"{fmt(m_id)} vs {ref_model} {fmt(r_id)} (p {fmt_p(id_part['p'].min())}, "
                        f"{len(id_part)} ID collection(s))",
                        m_id < r_id and worse,
                        src,
                    )
                if faster:
                    add(
                        model,
                        "faster than the cross-encoder (paper: about 4× lower latency)",
                        "latency ratio reference / MICE > 1",
                        f"{lat_r / lat_m:.2f}× ({fmt(lat_m, 1)} vs {fmt(lat_r, 1)} ms)",
                        lat_r / lat_m > 1,
                        src,
                    )
                continue
            if np.isfinite(m_id) and np.isfinite(r_id) and r_id:
                add(
                    model,
                    f"ID: keeps most of the cross-encoder's {measure}",
                    f"≥ {ID_KEEP_RATIO:g} × reference (mean over ID collections)",
                    f"{fmt(m_id)} vs {ref_model} {fmt(r_id)} ({m_id / r_id:.1%})",
                    m_id >= ID_KEEP_RATIO * r_id,
                    src,
                )
            ood_part, m_ood = dom(model, "OOD")
            _, r_ood = dom(ref_model, "OOD")
            if np.isfinite(m_ood) and np.isfinite(r_ood) and r_ood:
                worse = bool(((ood_part["p"] < opts.alpha) & (ood_part["delta"] < 0)).any())
                add(
                    model,
                    "OOD: generalises at least as well as the cross-encoder",
                    f"≥ reference on average, or no OOD collection significantly worse (p < {opts.alpha:g})",
                    f"{fmt(m_ood)} vs {ref_model} {fmt(r_ood)} ({m_ood / r_ood:.1%})"
                    + ("; significantly worse on a collection" if worse else ""),
                    m_ood >= r_ood or not worse,
                    src,
                )
            if faster:
                add(
                    model,
                    "faster than the cross-encoder (paper: about 4× lower latency)",
                    "latency ratio reference / MICE > 1",
                    f"{lat_r / lat_m:.2f}× ({fmt(lat_m, 1)} vs {fmt(lat_r, 1)} ms)",
                    lat_r / lat_m > 1,
                    src,
                )
            for other in late:
                _, o_ood = dom(other, "OOD")
                if np.isfinite(m_ood) and np.isfinite(o_ood):
                    add(
                        model,
                        f"OOD: generalises better than late interaction ({other})",
                        f"mean OOD {measure} above {other}'s",
                        f"{fmt(m_ood)} vs {other} {fmt(o_ood)}",
                        m_ood > o_ood,
                        src,
                    )
                lat_o = latency(other)
                if np.isfinite(lat_m) and np.isfinite(lat_o) and lat_o > 0:
                    add(
                        model,
                        f"latency close to late interaction ({other}; paper: matching ColBERT)",
                        f"MICE latency ≤ {MATCH_RATIO:g} × {other}'s",
                        f"{fmt(lat_m, 1)} vs {fmt(lat_o, 1)} ms",
                        lat_m <= MATCH_RATIO * lat_o,
                        src,
                    )
    if not rows:
        return None, "", "; ".join(notes) or "the comparison tables hold no ID/OOD rows to compare"
    failed = [r for r in rows if r["reproduced"] == "NO"]
    summary = f"{len(rows) - len(failed)} of {len(rows)} checked directions reproduced" + (
        ". Not reproduced: "
        + "; ".join(f"{r['model']}: {r['direction']} (observed {r['observed']})" for r in failed)
        + "."
        if failed
        else "."
    )
    table = Table(
        pd.DataFrame(rows),
        "Directions of the MICE paper, checked on this study's numbers with the "
        "criterion stated (the paper's wording is qualitative; the thresholds are this report's). 'NO' "
        "marks a direction this study did not reproduce.",
        sorted(set(used)),
    )
    return table, summary, "; ".join(notes)
