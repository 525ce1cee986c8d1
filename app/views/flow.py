"""Flow view: role→role attention flows per layer (and per head) from ``python -m probe.run`` results.

Answers: who attends to whom in which layer, and how much does that vary from query to query?
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, data
from app.views.common import Context, guard
from probe.flows import aggregate_flows, per_query_flows
from probe.roles import FLOW_ROLES

TARGETS = FLOW_ROLES  # the report's columns: every role, sep1 and sep2 apart (no merged "sep")


def render(ctx: Context) -> None:
    st.header("Flow: role→role attention per layer")
    st.caption(
        "Who attends to whom, in which layer, and how much does it vary over queries? Each cell: the mean "
        "over queries of the share of a source token's attention that lands on the target role, ± its "
        "standard deviation over queries."
    )
    with guard("Results folder"):
        folders = data.probe_folders(data.scan_results(ctx.results))
    if not folders:
        st.info(
            f"No probe results under `{ctx.results}`. Run for example `python -m probe.run --model reference "
            f"--collection dl19 --queries 20 --depth 10 --out {ctx.results / 'probe'}`.",
            icon="ℹ️",
        )
        return
    labels = {f.label(ctx.results): f for f in folders}
    chosen = st.selectbox("Probe results", list(labels), key="flow_folder")
    with guard(f"Probe results {chosen}"):
        show(labels[chosen])


def load_per_query(folder: data.ResultFolder) -> tuple[pd.DataFrame, dict]:
    name = "flows_per_query" if "flows_per_query" in folder.tables else "flows"
    df = data.table(folder.path, name)
    meta = data.manifest(folder.path, name)
    missing = {"query_id", "layer", "head", "source", "target", "value"} - set(df.columns)
    if missing:
        raise data.BadInput(
            f"table {name!r} in {str(folder.path)!r} lacks columns {sorted(missing)}; "
            "expected the flows tables of `python -m probe.run`"
        )
    if name == "flows":
        df = per_query_flows(df)
    return df, meta


def matrix(agg: pd.DataFrame, column: str) -> pd.DataFrame:
    m = agg.pivot_table(index="source", columns="target", values=column, observed=True, aggfunc="first")
    return m.reindex(
        index=[s for s in FLOW_ROLES if s in m.index], columns=[t for t in TARGETS if t in m.columns]
    )


def show(folder: data.ResultFolder) -> None:
    fpq, meta = load_per_query(folder)
    if fpq.empty:
        st.info("The flows table is empty.")
        return
    coll = meta.get("collection") or {}
    st.caption(
        f"model `{meta.get('model', '?')}` · collection {coll.get('name', '?')} "
        f"({coll.get('queries', '?')} queries, {coll.get('candidates', '?')} pairs) · "
        f"{meta.get('created', '')} · git {meta.get('git_revision', '?')}"
    )
    collections = sorted(fpq["collection"].astype(str).unique())
    if len(collections) > 1:
        which = st.selectbox("Collection", collections, key="flow_collection")
        fpq = fpq[fpq["collection"].astype(str) == which]
    layers = sorted(int(x) for x in fpq["layer"].unique())
    heads = sorted(int(x) for x in fpq["head"].unique())
    c1, c2 = st.columns([1, 3])
    per_head = c1.toggle(
        "Per head",
        key="flow_per_head",
        help="Show every head of one layer instead of the mean over heads of every layer",
    )
    if per_head:
        layer = c2.selectbox("Layer", layers, key="flow_layer")
        agg = aggregate_flows(fpq[fpq["layer"] == layer], keys=("layer", "head", "source", "target"))
        panels = [
            (
                f"layer {layer} · head {h}",
                matrix(agg[agg["head"] == h], "query_mean"),
                matrix(agg[agg["head"] == h], "query_std"),
            )
            for h in heads
        ]
        cols = 4
    else:
        agg = aggregate_flows(fpq, keys=("layer", "source", "target"))
        panels = [
            (
                f"layer {la} (mean of {len(heads)} heads)",
                matrix(agg[agg["layer"] == la], "query_mean"),
                matrix(agg[agg["layer"] == la], "query_std"),
            )
            for la in layers
        ]
        cols = 3
    n_queries = fpq["query_id"].nunique()
    st.pyplot(charts.flow_grid(panels, columns=cols, vmax=1.0), clear_figure=True)
    st.caption(
        f"± = standard deviation over {n_queries} queries (each query's pairs averaged first); colour: "
        "share of the source's attention, viridis 0–1 as in the reports."
    )
    keep = [
        c
        for c in (
            "layer",
            "head",
            "source",
            "target",
            "query_mean",
            "query_std",
            "queries",
            "mean",
            "std",
            "count",
        )
        if c in agg.columns
    ]
    with st.expander("Flows (table)"):
        st.dataframe(agg[keep], hide_index=True, key="flow_table")

    st.subheader("Spread over queries")
    c1, c2 = st.columns(2)
    source = c1.selectbox(
        "Source (attending)",
        [s for s in FLOW_ROLES if s in set(fpq["source"].astype(str))],
        index=FLOW_ROLES.index("query"),
        key="flow_source",
    )
    target = c2.selectbox(
        "Target (attended)",
        [t for t in TARGETS if t in set(fpq["target"].astype(str))],
        index=TARGETS.index("doc"),
        key="flow_target",
    )
    rows = fpq[(fpq["source"].astype(str) == source) & (fpq["target"].astype(str) == target)]
    per_query = rows.groupby(["query_id", "layer"], observed=True)["value"].mean().reset_index()
    per_query["query_id"] = per_query["query_id"].astype(str)
    st.altair_chart(charts.flow_spread(per_query, f"{source}2{target} (mean over heads)"))
    st.caption(
        f"One point per query: the share of `{source}` tokens' attention on `{target}`, averaged over the "
        "query's pairs and all heads."
    )
    if "rollout" in folder.tables:
        rollout_section(folder)


def rollout_section(folder: data.ResultFolder) -> None:
    roll = data.table(folder.path, "rollout")
    doc = roll[roll["role"].astype(str) == "doc"]
    if doc.empty:
        return
    st.subheader("How much of CLS comes from the document")
    per_query = doc.groupby(["method", "query_id", "layer"], observed=True)["value"].mean().reset_index()
    summary = per_query.groupby(["method", "layer"], observed=True)["value"].agg(["mean", "std", "count"])
    summary = summary.reset_index().rename(columns={"count": "queries"})
    summary["method"] = summary["method"].astype(str)
    st.line_chart(summary.pivot(index="layer", columns="method", values="mean"))
    st.caption(
        "Share of the CLS representation after layers 0..ℓ that comes from document tokens (attention "
        "rollout; attention flow on the few pairs it was computed for), mean over queries."
    )
