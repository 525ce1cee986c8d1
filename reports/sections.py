"""The report's sections, built from the tables :func:`reports.discover.discover` found.

Each builder takes the :class:`~reports.discover.Results` index and returns a
:class:`~reports.blocks.Section`. Builders only *read* the common results format and call library functions
(``ablations.experiments.sweep.pivot``, ``probe.summary.summary``); a section whose tables are absent or
unreadable is returned with ``missing`` set to a sentence that says what is missing and which command produces
it. Tables are sorted and formatted here, so both renderers print the same digits and a rebuild from the same
results prints the same tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ablations.experiments.runner import BM25_COLUMNS
from ablations.experiments.sweep import pivot
from probe.errors import BadInput
from probe.roles import FLOW_ROLES
from probe.summary import summary as probe_summary

from . import plots
from .blocks import Figure, Heading, Paragraph, Section, Table, fmt, fmt_ci, fmt_p, stars
from .discover import Results, Source, side_file

DEFAULT_MEASURE = "nDCG@10"
SEARCH_KIND = "ablation-search"
SWEEP_KIND = "ablation-sweep"
RUN_KIND = "ablation-run"
PROBE_KIND = "probe"
#: Manifest kinds / table names of the MICE comparison (issue #5, ``python -m ablations.compare``).
COMPARE_KINDS = ("mice-compare", "mice-comparison", "compare", "comparison")
COMPARE_TABLES = ("comparison", "compare")


@dataclass
class Options:
    measure: str = DEFAULT_MEASURE
    top: int = 10  # rows of the largest-effects table
    alpha: float = 0.05


def need(df: pd.DataFrame, columns: list[str], source: Source) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise BadInput(
            f"{source.rel} lacks column(s) {', '.join(missing)} (has {', '.join(map(str, df.columns))})"
        )


def _cmd(results: Results, sub: str) -> str:
    return f"{results.label}/{sub}"


def _strings(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in out.columns:
        out[c] = out[c].map(
            lambda v: (
                v if isinstance(v, str) else fmt(float(v)) if isinstance(v, (float, np.floating)) else str(v)
            )
        )
    return out.reset_index(drop=True)


def _manifest_rel(s: Source) -> str:
    return f"{s.rel_folder}/{s.table}.json" if s.rel_folder != "." else f"{s.table}.json"


def _folders(sources: list[Source]) -> list[list[Source]]:
    by: dict[str, list[Source]] = {}
    for s in sources:
        by.setdefault(s.rel_folder, []).append(s)
    return [by[k] for k in sorted(by)]


def _measure(df: pd.DataFrame, wanted: str) -> tuple[str, str]:
    """The measure to show (``wanted`` when the table has it, else its first) and a note when it differs."""
    measures = list(dict.fromkeys(df["measure"].astype(str)))
    if wanted in measures:
        return wanted, ""
    if not measures:
        raise BadInput("the summary table has no rows")
    return measures[0], f"{wanted} is not in this table; showing {measures[0]}."


# ------------------------------------------------------------------------------------------ setup
def _compact_settings(meta: dict) -> str:
    s = meta.get("settings") or {}
    keys = (
        "queries",
        "depth",
        "max_length",
        "batch_size",
        "n_boot",
        "tie_tol",
        "measures",
        "flow_pairs",
        "attribution_pairs",
        "ig_steps",
        "backend",
        "model_kind",
    )
    parts = [f"{k}={s[k]}" for k in keys if k in s and s[k] is not None]
    return ", ".join(parts)


def setup_section(results: Results, opts: Options) -> Section:
    sec = Section("setup", "Setup")
    if not results.sources:
        sec.missing = (
            f"no result tables (parquet + JSON manifest) found under {results.label}; "
            "run python -m probe.run / python -m ablations.run / sweep / search with --out under it"
        )
        if results.problems:
            sec.add(Paragraph("Files found but not usable: " + "; ".join(results.problems), "warning"))
        return sec
    folders = _folders(results.sources)
    sec.add(
        Paragraph(
            f"Results folder {results.label}: {len(results.sources)} tables in {len(folders)} folders. "
            "Every table and figure names the files its numbers come from "
            "(paths relative to the results folder); the Sources appendix lists each file's SHA-256, "
            "its manifest's creation time and git revision."
        )
    )

    rows, prov, models, collections, envs = [], [], {}, {}, {}
    for group in folders:
        metas = [s.manifest for s in group]
        first = group[0].manifest
        kinds = sorted({s.kind for s in group})
        coll = first.get("collection") or {}
        # one collection ("collection": describe()) or several ("collections": {name: describe()} from
        # ablations.compare, or [describe(), ...] from ablations.evaluate)
        many = first.get("collections") or []
        if isinstance(many, dict):
            many = [c for _, c in sorted(many.items())]
        elif not isinstance(many, list):
            many = []
        colls = [coll] if isinstance(coll, dict) and coll else [c for c in many if isinstance(c, dict)]
        cname = ", ".join(str(c.get("name", "–")) for c in colls) if colls else str(coll or "–")
        model_names = first.get("model") or ", ".join(sorted(first.get("models") or {})) or "–"
        seeds = sorted({str(m.get("seed", (m.get("settings") or {}).get("seed", "–"))) for m in metas})
        rows.append(
            {
                "folder": group[0].rel_folder,
                "kind": ", ".join(kinds),
                "tables": ", ".join(s.table for s in group),
                "model": str(model_names),
                "collection": cname,
                "seed": ", ".join(seeds),
            }
        )
        prov.append(
            {
                "folder": group[0].rel_folder,
                "settings": _compact_settings(first),
                "created (UTC)": min(str(m.get("created", "")) for m in metas),
                "git revision": ", ".join(sorted({str(m.get("git_revision", "–")) for m in metas})),
            }
        )
        if first.get("model") or not first.get("models"):
            key = (str(first.get("model", "–")), str(first.get("model_fingerprint", "–")))
            models.setdefault(key, []).append(group[0].rel_folder)
        else:
            for name, path in sorted((first.get("models") or {}).items()):
                models.setdefault((f"{name}: {path}", "–"), []).append(group[0].rel_folder)
        for c in colls:
            ckey = tuple(
                str(c.get(k, "–")) for k in ("name", "queries", "candidates", "judged_pairs", "source")
            )
            collections.setdefault(ckey, []).append(group[0].rel_folder)
        for m in metas:
            env = m.get("environment") or {}
            vers = env.get("versions") or {}
            ekey = (
                str(env.get("python", "–")),
                str(env.get("machine", "–")),
                str(env.get("processor", "–")),
                str(env.get("cpu_count", "–")),
                ", ".join(f"{k} {v}" for k, v in sorted(vers.items()) if v),
            )
            envs.setdefault(ekey, {})[group[0].rel_folder] = None
    manifests = [f"{g[0].rel_folder}/*.json" if g[0].rel_folder != "." else "*.json" for g in folders]

    sec.add(Heading("Runs"))
    sec.add(
        Table(
            _strings(pd.DataFrame(rows)),
            "One row per results folder: what ran (manifest kind and tables), "
            "on which model and collection, with which seed.",
            manifests,
        )
    )
    sec.add(
        Table(
            _strings(pd.DataFrame(prov)),
            "Settings of each folder's run, when it was written (manifest "
            "creation time) and at which git revision of the toolkit.",
            manifests,
        )
    )
    sec.add(Heading("Models"))
    sec.add(
        Table(
            pd.DataFrame(
                [
                    {
                        "model": m,
                        "fingerprint (sha1 of config + weights)": f,
                        "folders": ", ".join(sorted(set(v))),
                    }
                    for (m, f), v in sorted(models.items())
                ]
            ),
            "Models as recorded in the manifests. Probe manifests carry no fingerprint (–).",
            manifests,
        )
    )
    sec.add(Heading("Collections"))
    if collections:
        sec.add(
            Table(
                pd.DataFrame(
                    [
                        {
                            "collection": k[0],
                            "queries": k[1],
                            "candidate pairs": k[2],
                            "judged pairs": k[3],
                            "source": k[4],
                            "folders": ", ".join(sorted(set(v))),
                        }
                        for k, v in sorted(collections.items())
                    ]
                ),
                "Collections with the counts each run re-ranked (judged queries; candidates = query × "
                "document pairs) and where they were read from.",
                manifests,
            )
        )
    else:
        sec.add(Paragraph("No manifest records a collection.", "note"))
    sec.add(Heading("Hardware and software"))
    sec.add(
        Table(
            pd.DataFrame(
                [
                    {
                        "python": k[0],
                        "machine": k[1],
                        "processor": k[2],
                        "CPU cores": k[3],
                        "packages": k[4],
                        "folders": ", ".join(sorted(v)),
                    }
                    for k, v in sorted(envs.items())
                ]
            ),
            "The environment each run recorded in its manifest.",
            manifests,
        )
    )
    if results.problems:
        sec.add(Paragraph("Files found but not used: " + "; ".join(results.problems), "warning"))
    return sec


# ------------------------------------------------------------------------------------------ flows
def flows_section(results: Results, opts: Options) -> Section:
    sec = Section("flows", "Attention flows")
    probes = results.find(kind=PROBE_KIND)
    if not probes:
        sec.missing = (
            f"no probe results (manifest kind 'probe') found under {results.label} "
            f"(run python -m probe.run --queries 10 --depth 10 --out {_cmd(results, 'probe')})"
        )
        return sec
    for group in _folders(probes):
        _guarded(sec, group[0].rel_folder + "/", _probe_folder, sec, group)
    return sec


def _guarded(sec: Section, what: str, fn, *args):
    """Run one part of a section; unreadable input becomes a 'missing' note there instead of losing the
    section."""
    try:
        return fn(*args)
    except BadInput as exc:
        sec.add(Paragraph(f"missing: {what} could not be used: {exc}", "missing"))
        return None


def _probe_folder(sec: Section, group: list[Source]) -> None:
    meta = group[0].manifest
    coll = meta.get("collection") or {}
    sec.add(
        Heading(
            f"{group[0].rel_folder}/: {meta.get('model', '–')} on "
            f"{coll.get('name', '–') if isinstance(coll, dict) else coll}"
        )
    )
    tables = {s.table: s for s in group}
    flow_src = tables.get("flows_summary") or tables.get("flows")
    if flow_src is None:
        sec.add(
            Paragraph(
                f"missing: {group[0].rel_folder} has no flows or flows_summary table; the "
                "per-layer role→role heatmaps need one.",
                "missing",
            )
        )
    else:
        df = flow_src.read()
        value = "mean" if flow_src.table == "flows_summary" else "value"
        need(df, ["layer", "source", "target", value], flow_src)
        df = df[df["target"].astype(str).isin(FLOW_ROLES) & df["source"].astype(str).isin(FLOW_ROLES)]
        mean = (
            df.assign(source=df["source"].astype(str), target=df["target"].astype(str))
            .groupby(["layer", "source", "target"])[value]
            .mean()
        )
        roles = [r for r in FLOW_ROLES if r in set(df["source"].astype(str)) | set(df["target"].astype(str))]
        grids = {
            int(layer): part.droplevel(0).unstack("target").reindex(index=roles, columns=roles)
            for layer, part in mean.groupby(level=0)
        }
        n = len(grids)
        rows = int(np.ceil(n / 3))
        sec.add(
            Figure(
                plots.flow_heatmaps_plot(grids),
                f"Role→role attention per layer (mean over heads and probed pairs): row = the attending "
                f"role, column = the attended role; each row sums to 1. Layers {min(grids)}–{max(grids)} "
                "(0-based).",
                (7.0, 2.5 * rows + 0.4),
                [flow_src.rel],
                "role to role attention heatmaps per layer",
            )
        )
    if "flows" in tables:
        flows = tables["flows"].read()
        need(flows, ["layer", "source", "target", "value"], tables["flows"])
        parts = {"flows": flows}
        srcs = [tables["flows"].rel]
        if "rollout" in tables:
            parts["rollout"] = tables["rollout"].read()
            srcs.append(tables["rollout"].rel)
        summ = probe_summary(parts)
        summ = summ.assign(layer=summ["layer"].astype(int))
        sec.add(
            Table(
                _strings(summ.round(6)).assign(layer=summ["layer"].astype(str)),
                "Headline flows per layer (probe.summary: mean over heads and pairs). a2b = share of "
                "an a-token's attention on b-tokens; *_cls_from_doc = share of CLS after layers 0..ℓ "
                "coming from document tokens.",
                srcs,
            )
        )
    if "rollout" in tables:
        r = tables["rollout"].read()
        need(r, ["layer", "method", "role", "value"], tables["rollout"])
        curves = (
            r.assign(method=r["method"].astype(str), role=r["role"].astype(str))
            .groupby(["method", "role", "layer"], as_index=False)["value"]
            .mean()
        )
        pairs = r.groupby("method")[["query_id", "doc_id"]].apply(lambda g: len(g.drop_duplicates()))
        sec.add(
            Figure(
                plots.rollout_plot(curves),
                "Rollout curve: share of the final CLS representation that comes from each role after "
                "layers 0..ℓ (Abnar & Zuidema 2020). Pairs: "
                + ", ".join(f"{m} {int(n)}" for m, n in pairs.sort_index().items())
                + ".",
                (7.0, 3.2),
                [tables["rollout"].rel],
                "rollout curve",
            )
        )
    else:
        sec.add(
            Paragraph(
                f"missing: {group[0].rel_folder} has no rollout table (the probe ran with "
                "--no-rollout and --flow-pairs 0); no rollout curve.",
                "missing",
            )
        )
    if "attributions" in tables:
        a = tables["attributions"].read()
        need(a, ["role", "attribution", "abs_share", "delta"], tables["attributions"])
        g = a.assign(role=a["role"].astype(str)).groupby("role")
        att = pd.DataFrame(
            {
                "role": list(g.groups),
                "mean attribution": g["attribution"].mean().to_numpy(),
                "mean |attribution| share": g["abs_share"].mean().to_numpy(),
                "pairs": g.size().to_numpy(),
            }
        )
        att["order"] = att["role"].map({r: i for i, r in enumerate(FLOW_ROLES)})
        att = att.sort_values("order").drop(columns="order")
        sec.add(
            Table(
                _strings(att),
                "Integrated Gradients per role (mean over the attributed pairs); the "
                f"largest completeness gap |delta| is {float(a['delta'].abs().max()):.2e}.",
                [tables["attributions"].rel],
            )
        )


# ------------------------------------------------------------------------------------- ablations
def _search_folders(results: Results) -> set:
    return {s.folder for s in results.find(kind=SEARCH_KIND)}


def _effects_table(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "mask": df["spec_label"].astype(str),
            "collection": df["collection"].astype(str),
            "queries": df["n"].astype(int).astype(str),
            "full": df["baseline_mean"].map(fmt),
            "ablated": df["mean"].map(fmt),
            "Δ": df["delta"].map(lambda v: fmt(v, signed=True)),
            "95% CI": [fmt_ci(lo, hi) for lo, hi in zip(df["ci_low"], df["ci_high"])],
            "p": df["p"].map(fmt_p),
            "sig.": df["p"].map(stars),
            "W/T/L": [f"{w}/{t}/{lo}" for w, t, lo in zip(df["wins"], df["ties"], df["losses"])],
        }
    )
    # settings that change the numbers, shown when they differ between the rows (else the setup says them)
    for col, label in (("depth", "depth"), ("max_length", "max len"), ("model_fingerprint", "model")):
        if col in df and df[col].nunique() > 1:
            out.insert(2, label, df[col].astype(str).to_numpy())
    if "_source" in df:
        out["source"] = df["_source"].to_numpy()
    return out.reset_index(drop=True)


SUMMARY_NEEDS = [
    "spec_label",
    "collection",
    "measure",
    "n",
    "mean",
    "baseline_mean",
    "delta",
    "p",
    "ci_low",
    "ci_high",
    "wins",
    "ties",
    "losses",
    "run_id",
]


def ablations_section(results: Results, opts: Options) -> Section:
    sec = Section("ablations", "Ablations")
    searches = _search_folders(results)
    sweeps = [s for s in results.find(kind=SWEEP_KIND, table="summary") if s.folder not in searches]
    runs = results.find(kind=RUN_KIND, table="summary")
    if not sweeps and not runs:
        sec.missing = (
            f"no ablation results (manifest kind 'ablation-sweep' or 'ablation-run', table 'summary') "
            f"found under {results.label} (run python -m ablations.sweep --out "
            f"{_cmd(results, 'ablations/sweep')} or python -m ablations.run --remove doc2query --out "
            f"{_cmd(results, 'ablations/runs')})"
        )
        return sec
    pooled = []
    for src in sweeps:
        part = _guarded(sec, src.rel, _sweep_source, sec, src, opts)
        if part is not None:
            pooled.append(part)
    if runs:
        sec.add(Heading("Single ablation runs"))
        for src in runs:
            part = _guarded(sec, src.rel, _run_source, sec, src, opts)
            if part is not None:
                pooled.append(part)
    if pooled:
        _largest_effects(sec, pooled, opts)
    return sec


def _sweep_source(sec: Section, src: Source, opts: Options) -> pd.DataFrame | None:
    df = src.read()
    sec.add(Heading(f"Sweep {src.rel_folder}/"))
    if df.empty:
        sec.add(Paragraph(f"missing: {src.rel} has no finished cell yet.", "missing"))
        return None
    need(df, [*SUMMARY_NEEDS, "cell_interaction", "cell_layers"], src)
    measure, note = _measure(df, opts.measure)
    cells, finished = src.manifest.get("cells"), src.manifest.get("finished")
    cfg = src.manifest.get("sweep") or {}
    text = (
        f"Grid: interactions {', '.join(map(str, cfg.get('interactions', [])))}; mode "
        f"{cfg.get('mode', '–')}; base mask {_spec_label(cfg.get('base'))}."
    )
    if cells is not None and finished is not None and finished < cells:
        text += f" Partial sweep: {finished} of {cells} cells finished; unfinished cells are blank."
    sec.add(Paragraph(text + (" " + note if note else "")))
    for coll, part in df.groupby("collection", sort=True):
        part = part[part["measure"] == measure]
        grid = pivot(part, measure)
        pgrid = pivot(part.assign(delta=part["p"]), measure)
        baseline = float(part["baseline_mean"].iloc[0])
        ncell = int(np.isfinite(grid.to_numpy(dtype=float)).sum())
        nsig = int((part["p"] < opts.alpha).sum())
        sec.add(
            Figure(
                plots.ablation_heatmap_plot(grid, pgrid, measure, baseline),
                f"{coll}: Δ {measure} (ablated − full model, mean over {int(part['n'].iloc[0])} queries) "
                f"per interaction × layer; stars: paired t-test, uncorrected for the {ncell} cells "
                f"({nsig} with p < {opts.alpha:g}).",
                (7.0, 0.5 * len(grid) + 1.6),
                [src.rel],
                f"ablation heatmap {coll}",
            )
        )
    return df[df["measure"] == measure].assign(_source=src.rel)


def _run_source(sec: Section, src: Source, opts: Options) -> pd.DataFrame:
    df = src.read()
    need(df, SUMMARY_NEEDS, src)
    measure, note = _measure(df, opts.measure)
    part = df[df["measure"] == measure].sort_values(["collection", "spec_label", "run_id"], kind="stable")
    sec.add(
        Table(
            _effects_table(part),
            f"Every run in {src.rel_folder}: {measure} of the ablated and the "
            "full model, mean per-query Δ, seeded bootstrap 95% CI, paired t-test p and per-query "
            "wins/ties/losses." + (" " + note if note else ""),
            [src.rel],
        )
    )
    bm25 = _against_bm25_table(part)
    if bm25 is not None:
        sec.add(
            Table(
                bm25,
                f"The same runs against BM25, the candidates' own order (the first stage they re-rank): "
                f"{measure} of BM25, then the full and the ablated model's Δ over it with the paired "
                "t-test p (columns bm25_mean, baseline_delta_bm25, delta_bm25, … of the summary).",
                [src.rel],
            )
        )
    return part.assign(_source=src.rel)


def _against_bm25_table(df: pd.DataFrame) -> pd.DataFrame | None:
    """Each run's full and ablated model against the first stage; None for tables written before the
    ``bm25_*`` columns existed."""
    if any(c not in df for c in BM25_COLUMNS):
        return None
    df = df.dropna(subset=["bm25_mean"])
    if df.empty:
        return None
    return pd.DataFrame(
        {
            "mask": df["spec_label"].astype(str),
            "collection": df["collection"].astype(str),
            "BM25": df["bm25_mean"].map(fmt),
            "full Δ": df["baseline_delta_bm25"].map(lambda v: fmt(v, signed=True)),
            "full p": df["baseline_p_bm25"].map(fmt_p),
            "ablated Δ": df["delta_bm25"].map(lambda v: fmt(v, signed=True)),
            "ablated p": df["p_bm25"].map(fmt_p),
            "sig.": df["p_bm25"].map(stars),
        }
    ).reset_index(drop=True)


def _largest_effects(sec: Section, pooled: list[pd.DataFrame], opts: Options) -> None:
    allrows = pd.concat(pooled, ignore_index=True)
    allrows = (
        allrows[allrows["measure"] == opts.measure] if (allrows["measure"] == opts.measure).any() else allrows
    )
    allrows = (
        allrows.assign(_abs=allrows["delta"].abs())
        .sort_values(
            ["_abs", "spec_label", "collection", "run_id", "_source"],
            ascending=[False, True, True, True, True],
            kind="stable",
        )
        .drop_duplicates(["run_id"])
        .head(opts.top)
    )
    sec.add(Heading("Largest effects"))
    sec.add(
        Table(
            _effects_table(allrows),
            f"The {len(allrows)} ablations with the largest |Δ "
            f"{allrows['measure'].iloc[0]}| over all sweeps and runs above (each run once), with the "
            "bootstrap 95% confidence interval of the mean Δ and the paired t-test.",
            sorted(set(allrows["_source"])),
        )
    )


def _spec_label(spec) -> str:
    if not spec or not spec.get("rules"):
        return "none"
    from ablations.masking.masks import MaskSpec

    try:
        return MaskSpec.from_dict(spec).label
    except BadInput:
        return json.dumps(spec, sort_keys=True)


# ------------------------------------------------------------------------------------ minimal set
def minimal_section(results: Results, opts: Options) -> Section:
    sec = Section("minimal", "Minimal interaction set")
    steps = results.find(kind=SEARCH_KIND, table="steps")
    if not steps:
        sec.missing = (
            f"no search results (manifest kind 'ablation-search', table 'steps') found under "
            f"{results.label} (run python -m ablations.search --tolerance 0.01 --out "
            f"{_cmd(results, 'ablations/search')})"
        )
        return sec
    for src in steps:
        _guarded(sec, src.rel, _search_source, sec, src)
    return sec


def _search_source(sec: Section, src: Source) -> None:
    doc = src.manifest.get("search") or side_file(src, "search.json") or {}
    df = src.read()
    need(
        df,
        [
            "step",
            "phase",
            "unit",
            "removed_before",
            "mean",
            "baseline_mean",
            "delta",
            "p",
            "acceptable",
            "added",
        ],
        src,
    )
    coll = src.manifest.get("collection") or {}
    sec.add(Heading(f"Search {src.rel_folder}/: {coll.get('name', '–') if isinstance(coll, dict) else coll}"))
    final = doc.get("final") or {}
    measure = doc.get("measure", "–")
    alpha = doc.get("alpha")
    kv = [
        ("strategy", str(doc.get("strategy", "–"))),
        (
            "criterion",
            f"{measure} drop ≤ {doc.get('tolerance', '–')}"
            + ("" if alpha is None else f" and paired t-test p ≥ {alpha}"),
        ),
        (
            "units tried",
            str(
                int((df["phase"] == "alone").sum())
                if (df["phase"] == "alone").any()
                else df["unit"].nunique()
            ),
        ),
        (
            "steps",
            f"{len(df)} (a step that repeats an earlier step's mask reuses its result; "
            "python -m ablations.search prints the distinct masks)",
        ),
        ("removed", str(doc.get("removed_label") or "none")),
        (
            "surviving",
            ", ".join(f"{u['interaction']}[{u['layers']}]" for u in doc.get("surviving", []))
            or "none (every unit was removed)",
        ),
        (
            f"{measure} full → removed set",
            "–"
            if not final
            else f"{fmt(final.get('baseline_mean'))} → {fmt(final.get('mean'))} "
            f"(Δ {fmt(final.get('delta'), signed=True)}, "
            f"95% CI {fmt_ci(final.get('ci_low'), final.get('ci_high'))}, "
            f"p {fmt_p(final.get('p'))})",
        ),
    ]
    sec.add(
        Table(
            pd.DataFrame(kv, columns=["", "value"]),
            "The minimal interaction set found by the greedy search: the interactions it could remove "
            "while the criterion held, and those that survive.",
            [src.rel, _manifest_rel(src)],
        )
    )
    alone = df[df["phase"] == "alone"].sort_values("step")
    removed = set(df.loc[df["added"].astype(bool), "unit"])
    if len(alone):
        sec.add(
            Figure(
                plots.search_plot(alone, removed, float(doc.get("tolerance", 0.0) or 0.0), measure),
                f"Δ {measure} of each unit removed alone (the search's first phase).",
                (7.0, 0.22 * len(alone) + 1.6),
                [src.rel],
                "search units",
            )
        )
    table = pd.DataFrame(
        {
            "step": df["step"].astype(int).astype(str),
            "phase": df["phase"].astype(str),
            "unit": df["unit"].astype(str),
            "removed before": df["removed_before"].astype(int).astype(str),
            measure: df["mean"].map(fmt),
            "Δ": df["delta"].map(lambda v: fmt(v, signed=True)),
            "p": df["p"].map(fmt_p),
            "acceptable": df["acceptable"].map(lambda b: "yes" if b else "no"),
            "added": df["added"].map(lambda b: "yes" if b else ""),
        }
    )
    sec.add(
        Table(
            table,
            "Every evaluation of the search, in order: the removed set so far plus the unit "
            "(acceptable = within the criterion; added = the unit joined the removed set).",
            [src.rel],
        )
    )


# ------------------------------------------------------------------------------------ MICE comparison
def compare_sources(results: Results) -> list[Source]:
    """Comparison tables: named ``comparison`` (``ablations.compare`` also writes a ``per_query`` table of the
    same kind, which is not one)."""
    return [
        s
        for s in results.sources
        if s.table in COMPARE_TABLES or (s.kind in COMPARE_KINDS and "compar" in s.table)
    ]


def mice_section(results: Results, opts: Options) -> Section:
    from .compare import comparison_blocks

    sec = Section("mice", "MICE comparison")
    srcs = compare_sources(results)
    if not srcs:
        sec.missing = (
            f"no MICE comparison table found under {results.label} (run python -m "
            f"ablations.compare --config mice.json --mice MICE_MODEL --out {_cmd(results, 'mice')}; it "
            "writes the table comparison.parquet)"
        )
        return sec
    for block in comparison_blocks(srcs, opts):
        sec.add(block)
    return sec


def notes_section(results: Results, opts: Options) -> Section:
    from .compare import direction_checks

    sec = Section("notes", "Notes on reproducing the MICE paper")
    srcs = compare_sources(results)
    checks, summary, unknown = direction_checks(srcs, opts)
    sec.add(
        Paragraph(
            "The MICE paper (Vast et al. 2026, arXiv 2602.16299) reports these directions: removing "
            "attention sinks and the CLS→document interaction (steps 0–1) costs nothing, stopping documents "
            "from reading the query (step 2 on) costs effectiveness until the model is retrained, and the "
            "retrained MICE model keeps most of the cross-encoder's in-domain (ID) effectiveness, "
            "generalises at least as well out of domain (OOD), and is several times faster (about 4× lower "
            "latency). Each row below checks one direction against the comparison tables of this report."
        )
    )
    if checks is None:
        sec.missing = (
            "cannot check the paper's directions: " + unknown
            if unknown
            else f"cannot check the paper's directions: no MICE comparison table under {results.label}"
        )
        return sec
    sec.add(Paragraph(summary))
    sec.add(checks)
    if unknown:
        sec.add(Paragraph(unknown, "note"))
    return sec


# ------------------------------------------------------------------------------------------ sources
def sources_section(results: Results, opts: Options) -> Section:
    sec = Section("sources", "Sources")
    if not results.sources:
        sec.missing = f"no result tables under {results.label}"
        return sec
    rows = [
        {
            "file": s.rel,
            "kind": s.kind,
            "rows": str(s.manifest.get("rows", "–")),
            "created": str(s.manifest.get("created", "–")),
            "git revision": str(s.manifest.get("git_revision", "–")),
            "sha256": s.sha256[:16],
        }
        for s in results.sources
    ]
    sec.add(
        Table(
            pd.DataFrame(rows),
            "Every table this report read (results-relative path), with its manifest's "
            "creation time and git revision and the first 16 hex digits of the parquet file's SHA-256.",
            ["each file's manifest (the .json beside it)"],
        )
    )
    if results.problems:
        sec.add(Paragraph("Not used: " + "; ".join(results.problems), "warning"))
    return sec


def _findings(results: Results, opts: Options) -> Section:
    from .findings import findings_section

    return findings_section(results, opts)


BUILDERS: list[tuple[str, str, Callable[[Results, Options], Section]]] = [
    ("findings", "Summary of findings", _findings),
    ("setup", "Setup", setup_section),
    ("flows", "Attention flows", flows_section),
    ("ablations", "Ablations", ablations_section),
    ("minimal", "Minimal interaction set", minimal_section),
    ("mice", "MICE comparison", mice_section),
    ("notes", "Notes on reproducing the MICE paper", notes_section),
    ("sources", "Sources", sources_section),
]


def build_sections(results: Results, opts: Options | None = None) -> list[Section]:
    """Every section, in order; a section whose input is unreadable says so instead of failing the report."""
    opts = opts or Options()
    out = []
    for sid, title, builder in BUILDERS:
        try:
            out.append(builder(results, opts))
        except BadInput as exc:
            out.append(Section(sid, title, missing=f"the results for this section could not be read: {exc}"))
    return out
