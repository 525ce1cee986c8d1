"""Ablation view: remove interactions live on the current pair; read sweep and search results.

Answers: what does removing these interactions in these layers do to this pair's score, which
interaction × layer cells cost nDCG significantly over a query set, and which interactions must survive?
"""

from __future__ import annotations

import json
import math
import shlex

import pandas as pd
import streamlit as st

from ablations.masking.interactions import MASK_PRESETS, NAMED, valid_names
from ablations.masking.masks import MaskSpec, compile_for, parse_rules
from app import charts, data
from app.views.common import Context, check_pair, guard, pair_inputs, pick_pair
from probe.ranges import format_ranges, parse_ranges

NO_PRESET = "none"


def render(ctx: Context) -> None:
    st.header("Ablation: remove interactions")
    st.caption(
        "What does removing an interaction in some layers do to this pair's score; which interaction × "
        "layer cells cost nDCG over a query set; which interactions must survive?"
    )
    live, results = st.tabs(["Live on the current pair", "Sweep / search results"])
    with live, guard("Live ablation"):
        render_live(ctx)
    with results, guard("Ablation results"):
        render_results(ctx)


# ------------------------------------------------------------------------------------------ live
def toggle_table(num_layers: int) -> pd.DataFrame:
    table = pd.DataFrame(False, index=range(len(NAMED)), columns=[f"L{i}" for i in range(num_layers)])
    table.insert(0, "interaction", list(NAMED))
    return table


def removals(edited: pd.DataFrame, heads: str) -> list[str]:
    """``--remove`` items (``NAME:LAYERS:HEADS``) for every interaction toggled in at least one layer."""
    out = []
    for _, row in edited.iterrows():
        layers = [int(c[1:]) for c in edited.columns[1:] if bool(row[c])]
        if layers:
            out.append(f"{row['interaction']}:{format_ranges(layers)}:{heads}")
    return out


def render_live(ctx: Context) -> None:
    loaded = ctx.load_model()
    with guard("Collection"):
        pick_pair(ctx)
    query, doc = pair_inputs("abl")
    if loaded is None:
        return
    ce, path, key = loaded
    st.markdown(
        "Tick an interaction in a layer (`L0` = layer 0) to remove it there (**source = the attending "
        "token**: `doc2query` = document tokens may not read query tokens)."
    )
    c1, c2, c3 = st.columns([1, 1, 2])
    preset = c1.selectbox("Preset (all layers)", [NO_PRESET, *MASK_PRESETS], key="abl_preset")
    heads = c2.text_input(
        "Heads", "all", key="abl_heads", help="heads for the ticked interactions: all, 0-5, …"
    )
    extra = c3.text_input(
        "More --remove items",
        "",
        key="abl_extra",
        placeholder="query2doc+doc2query:0-2 cls2sep",
        help=f"INTERACTION[:LAYERS[:HEADS]], space-separated; {valid_names()}",
    )
    edited = st.data_editor(
        toggle_table(ce.num_layers),
        key=f"abl_toggles_{ce.num_layers}",
        hide_index=True,
        disabled=["interaction"],
        num_rows="fixed",
        column_config={  # narrow checkbox columns: 12 layers (or 24) fit beside the names
            "interaction": st.column_config.TextColumn("interaction", pinned=True),
            **{
                f"L{i}": st.column_config.CheckboxColumn(f"L{i}", width=36, help=f"remove it in layer {i}")
                for i in range(ce.num_layers)
            },
        },
        height=35 * (len(NAMED) + 1) + 3,
    )
    items = (
        ([] if preset == NO_PRESET else [preset]) + removals(edited, heads.strip() or "all") + extra.split()
    )
    if not items:
        st.info("Nothing removed yet: tick a cell, choose a preset or type an interaction.")
    if not check_pair(query, doc):
        return
    full = data.pair_score(ce, key, None, query, doc)
    if not items:
        st.metric(f"Score ({data.model_label(ce)})", f"{full:.4f}")
        return
    spec = MaskSpec(parse_rules(items)).require_rules()
    compiled = compile_for(ce, spec)
    for notice in compiled.notices:
        st.caption(notice)
    masked = data.pair_score(ce, key, spec.to_json(), query, doc)
    c1, c2, c3 = st.columns(3)
    c1.metric(f"Score ({data.model_label(ce)})", f"{full:.4f}")
    c2.metric("Score (masked)", f"{masked:.4f}", delta=f"{masked - full:+.4f}")
    c3.caption(f"Mask: {compiled.describe()}")
    cmd = "python -m ablations.run " + " ".join(f"--remove {shlex.quote(i)}" for i in items)
    st.code(f"{cmd} --model {shlex.quote(path)}", language="bash")
    c1, c2 = st.columns(2)
    c1.download_button(
        "Download mask spec (JSON)",
        json.dumps(spec.to_dict(), indent=2) + "\n",
        file_name="mask-spec.json",
        mime="application/json",
        key="abl_download",
    )
    with c2.expander("Mask spec"):
        st.json(spec.to_dict())


# --------------------------------------------------------------------------------------- results
def _first_layer(units: str) -> tuple:
    try:
        ranges = parse_ranges(str(units), "layers")
        return (0, ranges[0][0] if ranges else -1, str(units))
    except Exception:  # noqa: BLE001 - odd labels sort last
        return (1, 0, str(units))


def grid(
    rows: pd.DataFrame, index: list[str], column: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Δ, p and significance marks as interaction × layer grids (layers in order of their first layer)."""
    delta = rows.pivot_table(index=index, columns=column, values="delta", sort=False, aggfunc="first")
    p = rows.pivot_table(index=index, columns=column, values="p", sort=False, aggfunc="first")
    cols = sorted(delta.columns, key=_first_layer)
    delta, p = delta[cols], p.reindex_like(delta[cols])
    marks = p.map(lambda v: charts.stars(float(v)) if v is not None and not pd.isna(v) else "")
    if isinstance(delta.index, pd.MultiIndex):
        labels = [" · ".join(str(x) for x in t) for t in delta.index]
        delta.index = p.index = marks.index = labels
    return delta, p, marks


def render_results(ctx: Context) -> None:
    folders = data.ablation_folders(data.scan_results(ctx.results))
    if not folders:
        st.info(
            f"No ablation results under `{ctx.results}`. Run for example `python -m ablations.sweep --out "
            f"{ctx.results / 'ablations' / 'sweep'}` or `python -m ablations.search --out "
            f"{ctx.results / 'ablations' / 'search'}`.",
            icon="ℹ️",
        )
        return
    labels = {f.label(ctx.results): f for f in folders}
    chosen = st.selectbox("Results folder", list(labels), key="abl_folder")
    folder = labels[chosen]
    summary = data.table(folder.path, "summary")
    meta = data.manifest(folder.path, "steps" if "steps" in folder.tables else "summary")
    coll = meta.get("collection") or {}
    st.caption(
        f"{meta.get('kind', '?')} · model `{meta.get('model', '?')}` · collection {coll.get('name', '?')} "
        f"({coll.get('queries', '?')} queries, {coll.get('candidates', '?')} pairs) · "
        f"{meta.get('created', '')} · git {meta.get('git_revision', '?')}"
    )
    if summary.empty:
        st.info("The summary table is empty (no finished cell yet).")
        return
    search_doc = folder.path / "search.json"
    if "steps" in folder.tables or search_doc.is_file():
        show_search(folder, summary)
    elif "cell_interaction" in summary.columns:
        show_sweep(summary, meta)
    else:
        show_runs(summary)


def _measure(options: list[str], key: str) -> str:
    default = options.index("nDCG@10") if "nDCG@10" in options else 0
    return st.selectbox("Measure", options, index=default, key=key)


def _heatmap(
    delta: pd.DataFrame, p: pd.DataFrame, marks: pd.DataFrame, measure: str, baseline: float, table_key: str
) -> None:
    st.pyplot(
        charts.delta_heatmap(delta, marks, f"Δ {measure} vs the full model ({baseline:.4f})"),
        clear_figure=True,
        width=min(1200, 260 + 95 * delta.shape[1]),
    )
    st.caption(
        "Significance (paired t-test over queries): * p < 0.05, ** p < 0.01, *** p < 0.001. "
        "Blue = better than the full model, red = worse."
    )
    long = delta.stack().rename("delta").to_frame().join(p.stack().rename("p")).reset_index()
    long.columns = ["interaction", "layers", "delta", "p"]
    long["significance"] = [charts.stars(float(v)) for v in long["p"]]
    with st.expander("Grid (table)"):
        st.dataframe(
            long,
            hide_index=True,
            key=table_key,
            column_config={"p": st.column_config.NumberColumn("p", format="%.2g")},
        )


def show_sweep(summary: pd.DataFrame, meta: dict | None = None) -> None:
    cells, finished = (meta or {}).get("cells"), (meta or {}).get("finished")
    if isinstance(cells, int) and isinstance(finished, int) and finished < cells:
        st.warning(
            f"Partial sweep: {finished} of {cells} cells finished; unfinished cells are blank. Rerun the "
            "same `python -m ablations.sweep` command to resume it.",
            icon="⏳",
        )
    measure = _measure(list(dict.fromkeys(summary["measure"])), "abl_measure")
    rows = summary[summary["measure"] == measure]
    index = ["cell_interaction", "cell_heads"] if rows["cell_heads"].nunique() > 1 else ["cell_interaction"]
    delta, p, marks = grid(rows, index, "cell_layers")
    _heatmap(delta, p, marks, measure, float(rows["baseline_mean"].iloc[0]), "abl_grid")
    st.info(
        "A sweep removes one cell at a time. The minimal surviving set comes from a search: "
        "`python -m ablations.search --out DIR` (same options), then choose DIR here."
    )


def show_search(folder: data.ResultFolder, summary: pd.DataFrame) -> None:
    doc = data.read_json(folder.path / "search.json") if (folder.path / "search.json").is_file() else None
    steps = data.table(folder.path, "steps") if "steps" in folder.tables else pd.DataFrame()
    measure = str(doc.get("measure")) if doc else (str(steps["measure"].iloc[0]) if len(steps) else "nDCG@10")
    alone = steps[steps["phase"] == "alone"] if "phase" in steps.columns else pd.DataFrame()
    if len(alone):
        st.markdown(f"**Each unit removed alone** ({measure}):")
        delta, p, marks = grid(alone, ["interaction"], "layers")
        _heatmap(delta, p, marks, measure, float(alone["baseline_mean"].iloc[0]), "abl_grid")
    if doc is None:
        st.warning(f"{str(folder.path / 'search.json')!r} is missing: the search has not finished.")
        return
    st.subheader("Minimal surviving set")
    tol = doc.get("tolerance")
    alpha = doc.get("alpha")
    st.caption(
        f"Greedy {doc.get('strategy', '?')} search: removed while the {measure} drop stays ≤ {tol}"
        + ("" if alpha is None else f" and p ≥ {alpha}")
        + "."
    )
    final = doc.get("final")
    status = survival_grid(doc)
    c1, c2, c3 = st.columns(3)
    if "added" in steps.columns:  # units = (interaction, layer unit) as the search defined them
        c1.metric("Units removed", int(steps["added"].astype(bool).sum()))
        c2.metric("Units surviving", len(doc.get("surviving", [])))
    else:
        c1.metric("Layer cells removed", int((status == "removed").to_numpy().sum()))
        c2.metric("Layer cells surviving", int((status == "survives").to_numpy().sum()))
    if final:
        c3.metric(f"{measure} (removed set)", f"{final['mean']:.4f}", delta=f"{final['delta']:+.4f}")
    st.markdown(f"**Removed:** `{doc.get('removed_label') or 'nothing'}`")
    surviving = doc.get("surviving", [])
    st.markdown(
        "**Surviving:** "
        + (
            ", ".join(f"`{u['interaction']}[{u['layers']}]`" for u in surviving)
            or "nothing: every unit could be removed"
        )
    )
    if not status.empty:
        st.dataframe(status, hide_index=True, key="abl_survival")
    if final:
        st.caption(
            f"Removed set: {measure} {final['baseline_mean']:.4f} → {final['mean']:.4f} "
            f"(95% CI of Δ [{final['ci_low']:+.4f}, {final['ci_high']:+.4f}], p = {final['p']:.3g})."
        )
    st.download_button(
        "Download the removed set (mask spec JSON)",
        json.dumps(doc.get("removed", {}), indent=2),
        file_name="removed-spec.json",
        mime="application/json",
        key="abl_search_download",
    )
    if len(steps):
        with st.expander("Search steps"):
            st.dataframe(
                steps,
                hide_index=True,
                key="abl_steps",
                column_config={"p": st.column_config.NumberColumn("p", format="%.2g")},
            )


def _layers(text: str) -> list[int]:
    ranges = parse_ranges(str(text), "layers") or ()
    return [i for s, e in ranges for i in range(s, e + 1)]


def survival_grid(doc: dict) -> pd.DataFrame:
    """Interaction × layer: ``removed`` / ``survives`` for every unit the search considered."""
    cells: dict[tuple[str, int], str] = {}
    for u in doc.get("surviving", []):
        for layer in _layers(u["layers"]):
            cells[(u["interaction"], layer)] = "survives"
    for r in doc.get("removed", {}).get("rules", []):
        if str(r.get("layers", "all")).lower() == "all":
            continue
        for layer in _layers(r["layers"]):
            cells[(r["interaction"], layer)] = "removed"
    if not cells:
        return pd.DataFrame()
    inters = list(dict.fromkeys(i for i, _ in cells))
    layers = sorted({la for _, la in cells})
    out = pd.DataFrame(
        [[cells.get((i, la), "") for la in layers] for i in inters], columns=[f"layer {la}" for la in layers]
    )
    out.insert(0, "interaction", inters)
    return out


def show_runs(summary: pd.DataFrame) -> None:
    measure = _measure(list(dict.fromkeys(summary["measure"])), "abl_measure")
    rows = summary[summary["measure"] == measure].copy()
    rows["significance"] = [charts.stars(float(v)) if not math.isnan(float(v)) else "" for v in rows["p"]]
    cols = [
        c
        for c in (
            "spec_label",
            "layers",
            "baseline_mean",
            "mean",
            "delta",
            "ci_low",
            "ci_high",
            "p",
            "significance",
            "wins",
            "ties",
            "losses",
            "bm25_mean",
            "baseline_delta_bm25",
            "baseline_p_bm25",
            "delta_bm25",
            "p_bm25",
        )
        if c in rows.columns and rows[c].notna().any()
    ]
    p_format = {
        c: st.column_config.NumberColumn(c, format="%.2g") for c in ("p", "baseline_p_bm25", "p_bm25")
    }
    st.dataframe(rows[cols], hide_index=True, key="abl_runs", column_config=p_format)
    st.caption(
        "Runs of `python -m ablations.run`: one row per mask. `bm25_mean`: BM25, the candidates' own order; "
        "`baseline_delta_bm25` / `delta_bm25`: the full / ablated model minus BM25, with paired t-test p."
    )
