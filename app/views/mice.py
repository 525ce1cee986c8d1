"""MICE view: effectiveness, latency and storage of cross-encoder, masked, MICE, MaxSim and LITE scorers.

Answers: what does each scorer cost and keep, which ones are on the latency–effectiveness Pareto front,
and which MICE configuration produced the numbers (download its JSON)?

The comparison table is written by ``python -m ablations.compare`` (issue #5) in the common results
format. Its columns are recognised by name (docs/app.md lists the aliases), so the view keeps working if
the writer adds columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from app import charts, data
from app.views.common import Context, guard

NAME_COLS = ("model", "run", "system", "variant", "scorer", "name", "label")
KIND_COLS = ("kind", "family", "scorer_kind", "type")
COLLECTION_COLS = ("collection", "dataset")
VALUE_COLS = ("value", "mean")
CONFIG_COLS = ("config", "mice_config", "config_path")
KINDS = ("cross-encoder", "masked", "mice", "maxsim", "lite")
NO_COMPARISON = ("No MICE comparison yet: run `python -m ablations.compare` (issue #5) to write a `comparison` "
                 "table under the results folder `{root}`.")


def _first(df: pd.DataFrame, names) -> str | None:
    return next((n for n in names if n in df.columns), None)


def _like(df: pd.DataFrame, needles, exclude=()) -> str | None:
    for c in df.columns:
        lc = str(c).lower()
        if any(n in lc for n in needles) and c not in exclude:
            return c
    return None


def infer_kind(name: str) -> str:
    low = str(name).lower()
    for kind in ("maxsim", "lite", "mice", "masked"):
        if kind in low:
            return kind
    return "cross-encoder" if any(k in low for k in ("cross", "ce", "reference", "full")) else "other"


def normalise(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per scorer × collection × measure: name, kind, collection, measure, value, latency, storage;
    plus which source column fed each (``columns``)."""
    name = _first(df, NAME_COLS)
    if name is None:
        raise data.BadInput(f"the comparison table has no scorer column (one of {', '.join(NAME_COLS)}); "
                            f"its columns: {', '.join(map(str, df.columns))}")
    latency = _like(df, ("latency", "ms_per"))
    storage = _like(df, ("storage", "bytes", "index_mb", "_mb", "size"), exclude=(latency,))
    kind = _first(df, KIND_COLS)
    coll = _first(df, COLLECTION_COLS)
    keep = {"name": name}
    if "measure" in df.columns:
        value = _first(df, VALUE_COLS)
        if value is None:
            raise data.BadInput("the comparison table has a 'measure' column but no 'value' or 'mean' column")
        long = df.rename(columns={value: "value"})
    else:  # wide: one column per measure (names with '@', like nDCG@10)
        measures = [c for c in df.columns if "@" in str(c)]
        if not measures:
            raise data.BadInput("the comparison table has neither 'measure' + 'value' columns nor measure columns "
                                "named like nDCG@10")
        ids = [c for c in (name, kind, coll, latency, storage) if c is not None]
        long = df.melt(id_vars=ids, value_vars=measures, var_name="measure", value_name="value")
    out = pd.DataFrame({
        "name": long[name].astype(str),
        "kind": long[kind].astype(str) if kind else long[name].map(infer_kind),
        "collection": long[coll].astype(str) if coll else "",
        "measure": long["measure"].astype(str),
        "value": pd.to_numeric(long["value"], errors="coerce"),
        "latency": pd.to_numeric(long[latency], errors="coerce") if latency else float("nan"),
        "storage": pd.to_numeric(long[storage], errors="coerce") if storage else float("nan"),
    })
    for col in CONFIG_COLS:
        if col in long.columns:
            out["config"] = long[col].astype(str)
            keep["config"] = col
            break
    keep.update({k: v for k, v in (("kind", kind), ("collection", coll), ("latency", latency),
                                   ("storage", storage)) if v})
    return out, keep


def config_files(folder: Path, table: pd.DataFrame, meta: dict) -> list[Path]:
    """MICE configuration JSON files named by the table or its manifest, or lying beside the table."""
    names: list[Path] = []
    for value in table.get("config", pd.Series(dtype=str)).dropna().unique():
        names.append(Path(value))
    for key in ("mice_config", "config", "configs"):
        value = meta.get(key)
        values = value if isinstance(value, list) else [value]
        names.extend(Path(v) for v in values if isinstance(v, str))
    names.extend(folder.rglob("*.json"))
    out = []
    for p in dict.fromkeys(p if p.is_absolute() else (folder / p) for p in names):
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and data.is_mice_config(doc):
            out.append(p)
    return out


def render(ctx: Context) -> None:
    st.header("MICE: effectiveness, latency, storage")
    st.caption("What does each scorer keep and cost (cross-encoder, masked, MICE, MaxSim, LITE), which are on the "
               "latency–effectiveness Pareto front, and which MICE configuration is it?")
    with guard("Results folder"):
        folders = data.comparison_folders(data.scan_results(ctx.results))
        if not folders:
            st.info(NO_COMPARISON.format(root=ctx.results), icon="ℹ️")
            return
        labels = {f.label(ctx.results): f for f in folders}
        chosen = st.selectbox("Comparison", list(labels), key="mice_folder")
    with guard(f"Comparison {chosen}"):
        show(labels[chosen])


def show(folder: data.ResultFolder) -> None:
    name = data.COMPARISON_TABLE if data.COMPARISON_TABLE in folder.tables else next(
        t for t, info in folder.tables.items() if info.kind.startswith(("mice-compar", "compare")))
    raw = data.table(folder.path, name)
    meta = data.manifest(folder.path, name)
    df, used = normalise(raw)
    st.caption(f"`{folder.path / (name + '.parquet')}` · {meta.get('created', '')} · git "
               f"{meta.get('git_revision', '?')} · columns used: "
               + ", ".join(f"{k} ← `{v}`" for k, v in used.items()))
    c1, c2, c3 = st.columns(3)
    collections = sorted(df["collection"].unique())
    coll = c1.selectbox("Collection", collections, key="mice_collection") if len(collections) > 1 else collections[0]
    measures = list(dict.fromkeys(df["measure"]))
    measure = c2.selectbox("Measure", measures, index=measures.index("nDCG@10") if "nDCG@10" in measures else 0,
                           key="mice_measure")
    log_x = c3.toggle("Log latency axis", key="mice_logx")
    part = df[df["collection"] == coll]
    wide = part.pivot_table(index=["name", "kind"], columns="measure", values="value", sort=False)
    extra = part.groupby(["name", "kind"], sort=False)[["latency", "storage"]].first()
    table = wide.join(extra).reset_index()
    table = table.rename(columns={"latency": f"latency ({used.get('latency', 'n/a')})",
                                  "storage": f"storage ({used.get('storage', 'n/a')})"})
    st.dataframe(table, hide_index=True, key="mice_table")
    points = part[part["measure"] == measure].dropna(subset=["value"])
    if points["latency"].notna().any():
        st.altair_chart(charts.pareto_chart(points.rename(columns={"latency": "latency_ms", "value": measure}),
                                            "latency_ms", measure, "name", "kind", log_x=log_x))
        front = charts.pareto_front(points, "latency", "value")
        st.caption("Dashed line: the Pareto front (no other scorer is both faster and better): "
                   + ", ".join(f"`{n}`" for n in front["name"]) + ".")
    else:
        st.info("The comparison has no latency column, so there is no latency–effectiveness plot.")
    configs = config_files(folder.path, part, meta)
    if configs:
        options = {str(p.relative_to(folder.path)) if p.is_relative_to(folder.path) else str(p): p for p in configs}
        which = st.selectbox("MICE configuration", list(options), key="mice_config")
        text = options[which].read_text()
        st.download_button("Download MICE configuration (JSON)", text, file_name=options[which].name,
                           mime="application/json", key="mice_download")
        with st.expander("Configuration"):
            st.json(json.loads(text))
    else:
        st.info("No MICE configuration JSON next to the comparison (export one with the MICE tools, issue #5).")
