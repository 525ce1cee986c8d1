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
DOMAIN_COLS = ("domain", "split")
#: Columns shown as they are when present (statistics against the reference, model size).
EXTRA_COLS = ("delta", "p", "ci_low", "ci_high", "wins", "ties", "losses", "parameters")
VALUE_COLS = ("value", "mean")
CONFIG_COLS = ("config", "mice_config", "config_path")
KINDS = ("bm25", "cross-encoder", "masked", "mice", "maxsim", "lite")
NO_COMPARISON = (
    "No MICE comparison yet: run `python -m ablations.compare` (issue #5) to write a `comparison` "
    "table under the results folder `{root}`."
)


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
    for kind in ("bm25", "maxsim", "lite", "masked", "mice"):
        if kind in low:
            return kind
    return "cross-encoder" if any(k in low for k in ("cross", "ce", "reference", "full")) else "other"


def normalise(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per scorer × collection × measure: name, kind, collection, measure, value, latency, storage;
    plus which source column fed each (``columns``)."""
    name = _first(df, NAME_COLS)
    if name is None:
        raise data.BadInput(
            f"the comparison table has no scorer column (one of {', '.join(NAME_COLS)}); "
            f"its columns: {', '.join(map(str, df.columns))}"
        )
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
            raise data.BadInput(
                "the comparison table has neither 'measure' + 'value' columns nor measure columns "
                "named like nDCG@10"
            )
        ids = [c for c in (name, kind, coll, latency, storage) if c is not None]
        long = df.melt(id_vars=ids, value_vars=measures, var_name="measure", value_name="value")
    out = pd.DataFrame(
        {
            "name": long[name].astype(str),
            "kind": long[kind].astype(str) if kind else long[name].map(infer_kind),
            "collection": long[coll].astype(str) if coll else "",
            "measure": long["measure"].astype(str),
            "value": pd.to_numeric(long["value"], errors="coerce"),
            "latency": pd.to_numeric(long[latency], errors="coerce") if latency else float("nan"),
            "storage": pd.to_numeric(long[storage], errors="coerce") if storage else float("nan"),
        }
    )
    domain = _first(long, DOMAIN_COLS)
    out["domain"] = long[domain].astype(str) if domain else ""
    for col in EXTRA_COLS:
        if col in long.columns:
            out[col] = pd.to_numeric(long[col], errors="coerce")
    for col in CONFIG_COLS:
        if col in long.columns:
            out["config"] = long[col].astype(str)
            keep["config"] = col
            break
    keep.update(
        {
            k: v
            for k, v in (("kind", kind), ("collection", coll), ("latency", latency), ("storage", storage))
            if v
        }
    )
    return out, keep


def config_files(folder: Path, table: pd.DataFrame, meta: dict) -> list[Path]:
    """MICE configuration JSON files named by the table or its manifest, or lying beside the table."""
    names: list[Path] = []
    for value in table.get("config", pd.Series(dtype=str)).dropna().unique():
        names.append(Path(value))
    settings = meta.get("settings") if isinstance(meta.get("settings"), dict) else {}
    for value in (meta.get("mice_config"), meta.get("config"), settings.get("config"), settings.get("mice")):
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, str) and v:
                names.extend([Path(v), Path(v) / "mice.json"])  # a file, or a MICE model folder
    names.extend(folder.rglob("*.json"))
    candidates = []
    for p in names:  # relative paths: to the comparison's folder, the working directory, the repository
        candidates.extend([p] if p.is_absolute() else [folder / p, Path.cwd() / p, data.REPO_ROOT / p])
    out = []
    for p in dict.fromkeys(c.resolve() for c in candidates):
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and data.is_mice_config(doc):
            out.append(p)
    return out


def compare_table(part: pd.DataFrame, measure: str, used: dict[str, str]) -> pd.DataFrame:
    """One row per scorer: every measure's mean, then Δ / p / significance of ``measure``, latency,
    storage."""
    wide = part.pivot_table(index=["name", "kind"], columns="measure", values="value", sort=False)
    wide = wide[[m for m in dict.fromkeys(part["measure"]) if m in wide.columns]]
    sel = part[part["measure"] == measure].set_index(["name", "kind"])
    extra = pd.DataFrame(index=wide.index)
    if "delta" in sel.columns:
        extra[f"Δ {measure}"] = sel["delta"]
        if "p" in sel.columns:
            # text, so the reference's missing p shows blank (Streamlit draws a missing number as "None")
            extra["p"] = [
                "" if pd.isna(v) else f"{float(v):.2g}" for v in pd.to_numeric(sel["p"], errors="coerce")
            ]
            extra["significance"] = [charts.stars(float(p)) for p in sel["p"].reindex(wide.index)]
    facts = part.groupby(["name", "kind"], sort=False)[["latency", "storage"]].first()
    extra["latency"] = facts["latency"]  # the source columns are named in the caption and the header help
    extra["storage"] = facts["storage"]
    if "parameters" in sel.columns:
        extra["parameters"] = sel["parameters"]
    return wide.join(extra).reset_index()


def _latency_note(meta: dict, collection: str) -> str:
    """Where the latency was measured, said when it is not the collection shown."""
    lat = meta.get("latency") if isinstance(meta.get("latency"), dict) else {}
    where = lat.get("collection")
    if not where:
        return ""
    text = (
        f" Latency: measured on {where} ({len(lat.get('queries', []))} queries × "
        f"{lat.get('candidates_per_query', '?')} candidates), the same for every collection"
    )
    return text + (f", not on {collection}." if str(where) != str(collection) else ".")


def render(ctx: Context) -> None:
    st.header("MICE: effectiveness, latency, storage")
    st.caption(
        "What does each scorer keep and cost (cross-encoder, masked, MICE, MaxSim, LITE), which are on the "
        "latency–effectiveness Pareto front, and which MICE configuration is it?"
    )
    preferred: list[Path] = []
    with guard("Results folder"):
        folders = data.comparison_folders(data.scan_results(ctx.results))
        if not folders:
            st.info(NO_COMPARISON.format(root=ctx.results), icon="ℹ️")
        else:
            labels = {f.label(ctx.results): f for f in folders}
            chosen = st.selectbox("Comparison", list(labels), key="mice_folder")
            with guard(f"Comparison {chosen}"):
                preferred = show(labels[chosen])
    with guard("MICE configuration"):
        configuration_section(ctx, preferred)


def configuration_section(ctx: Context, preferred: list[Path]) -> None:
    """A MICE configuration on its own: summary, layer × interaction grid, per-layer table, download; the
    comparison's own configuration first, then every ``mice.json`` under the results and working folders."""
    from ablations.mice.config import MiceConfig
    from ablations.mice.grid import grid_wide, interaction_grid, summary_lines

    st.subheader("MICE configuration")
    found = [*preferred, *data.spec_files(*data.working_folders(ctx.results), mice_only=True)]
    files = list(dict.fromkeys(p.resolve() for p in found))
    if not files:
        st.info(
            f"No MICE configuration under `{ctx.results}` or the working folder: export one with "
            "`python -m ablations.export --from mice-final --out runs/mice/mice.json`.",
            icon="ℹ️",
        )
        return
    cwd = Path.cwd().resolve()
    options = {str(p.relative_to(cwd)) if p.is_relative_to(cwd) else str(p): p for p in files}
    which = st.selectbox(f"MICE configuration ({len(options)} found)", list(options), key="mice_config")
    text = options[which].read_text()
    cfg = MiceConfig.from_json(text, where=which)
    for line in summary_lines(cfg):
        st.markdown(f"- {line}")
    grid = interaction_grid(cfg)
    st.altair_chart(
        charts.config_grid_chart(grid, f"{cfg.label}: attention kept per layer"), key="mice_config_grid"
    )
    st.caption(
        "Green: kept; grey: removed (the mask plus the merge rule: no query-side ↔ document-side attention "
        "before the merge layer); orange: kept by some heads only; white: layer dropped. Source attends to "
        "target (`doc2query`: document tokens read query tokens)."
    )
    with st.expander("Per-layer table"):
        st.dataframe(grid_wide(grid), hide_index=True, key="mice_config_table")
    st.download_button(
        "Download MICE configuration (JSON)",
        text,
        file_name=options[which].name,
        mime="application/json",
        key="mice_download",
    )
    with st.expander("Raw JSON"):
        st.json(json.loads(text), expanded=False)


def show(folder: data.ResultFolder) -> list[Path]:
    """The comparison; returns the MICE configuration files it names or lies beside."""
    name = (
        data.COMPARISON_TABLE
        if data.COMPARISON_TABLE in folder.tables
        else next(t for t, info in folder.tables.items() if info.kind.startswith(("mice-compar", "compare")))
    )
    raw = data.table(folder.path, name)
    meta = data.manifest(folder.path, name)
    df, used = normalise(raw)
    st.caption(
        f"`{folder.path / (name + '.parquet')}` · {meta.get('created', '')} · git "
        f"{meta.get('git_revision', '?')} · columns used: "
        + ", ".join(f"{k} ← `{v}`" for k, v in used.items())
    )
    c1, c2, c3 = st.columns(3)
    collections = list(dict.fromkeys(df["collection"]))
    domains = dict(zip(df["collection"], df["domain"]))
    coll = c1.selectbox(
        "Collection",
        collections,
        key="mice_collection",
        format_func=lambda c: f"{c} ({domains[c]})" if domains.get(c) else c,
    )
    measures = list(dict.fromkeys(df["measure"]))
    measure = c2.selectbox(
        "Measure",
        measures,
        index=measures.index("nDCG@10") if "nDCG@10" in measures else 0,
        key="mice_measure",
    )
    log_x = c3.toggle("Log latency axis", key="mice_logx")
    part = df[df["collection"] == coll]
    table = compare_table(part, measure, used)
    lat_help = f"from the column {used.get('latency', 'n/a')!r} (milliseconds)"
    sto_help = f"from the column {used.get('storage', 'n/a')!r}"
    st.dataframe(
        table,
        hide_index=True,
        key="mice_table",
        column_config={
            "latency": st.column_config.NumberColumn("latency", format="%.1f", help=lat_help),
            "storage": st.column_config.NumberColumn("storage", format="%.4g", help=sto_help),
            "p": st.column_config.TextColumn(
                "p", help="paired t-test vs the reference; blank for the reference itself"
            ),
            **{m: st.column_config.NumberColumn(m, format="%.4f") for m in measures if m in table.columns},
            **(
                {f"Δ {measure}": st.column_config.NumberColumn(f"Δ {measure}", format="%+.4f")}
                if f"Δ {measure}" in table.columns
                else {}
            ),
        },
    )
    st.caption(
        f"Mean per query on {coll}"
        + (f" ({part['domain'].iloc[0]})" if part["domain"].iloc[0] else "")
        + (
            f"; Δ and p: {measure} against the reference (paired t-test: * p < 0.05, ** p < 0.01, "
            "*** p < 0.001; blank for the reference itself)"
            if "delta" in part.columns
            else ""
        )
        + "."
        + _latency_note(meta, coll)
    )
    points = part[part["measure"] == measure].dropna(subset=["value"])
    if points["latency"].notna().any():
        st.altair_chart(
            charts.pareto_chart(
                points,
                "latency",
                "value",
                "name",
                "kind",
                log_x=log_x,
                x_title=f"latency ({used['latency']})",
                y_title=measure,
            )
        )
        front = charts.pareto_front(points, "latency", "value")
        st.caption(
            "Dashed line: the Pareto front (no other scorer is both faster and better): "
            + ", ".join(f"`{n}`" for n in front["name"])
            + "."
        )
    else:
        st.info("The comparison has no latency column, so there is no latency–effectiveness plot.")
    return config_files(folder.path, part, meta)
