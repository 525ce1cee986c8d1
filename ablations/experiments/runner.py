"""Run an ablation: re-rank with interactions removed, evaluate, and compare with the full model per query.

:class:`Experiment` binds a cross-encoder, a rerank set and :class:`Settings`. It computes the unablated
baseline once (cached on disk, keyed by model fingerprint, collection, depth, queries and max length)
and :meth:`Experiment.run` turns a :class:`~ablations.masking.masks.MaskSpec` into a :class:`RunResult`: two
tidy tables in the common results format (:mod:`ablations.results`):

- ``per_query`` — one row per run × query × measure: ``value`` (ablated), ``baseline_value``, ``delta``,
  and ``bm25_value``, the first stage's own ranking of the same candidates (BM25);
- ``summary`` — one row per run × measure: mean, baseline mean, delta, paired t and p, bootstrap CI,
  wins / ties / losses (:mod:`ablations.evaluation.stats`); and against the first stage: ``bm25_mean``,
  ``delta_bm25`` / ``p_bm25`` (ablated − BM25, paired t-test) and ``baseline_delta_bm25`` /
  ``baseline_p_bm25`` (full model − BM25), the columns ``ablations.paper`` names the same way.

Both carry the run's identity: ``run_id`` (a hash of everything that determines the numbers), collection,
model, model fingerprint, the spec as canonical JSON, its label, the resolved layers and heads, seed and
git revision. :func:`write_results` appends runs to ``<out>/per_query.parquet`` and ``<out>/summary.parquet``
atomically (a rerun of the same ``run_id`` replaces its rows instead of duplicating them).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ablations.data.collections import RerankSet
from ablations.evaluation.measures import parse_measures, per_query
from ablations.evaluation.stats import DEFAULT_BOOTSTRAP, DEFAULT_TIE_TOL, paired_stats
from ablations.masking.masked import with_mask
from ablations.masking.masks import CompiledMask, MaskSpec, compile_for, format_ranges
from ablations.masking.prefix import PrefixCache, supports_prefix
from ablations.paths import cache_dir
from ablations.results import (
    atomic_write_bytes,
    git_revision,
    manifest,
    read_manifest,
    read_table,
    write_table,
)
from probe.errors import BadInput
from probe.model import CrossEncoder, model_fingerprint
from probe.progress import bar as progress_bar

ID_COLUMNS = [
    "run_id",
    "collection",
    "model",
    "model_fingerprint",
    "spec",
    "spec_label",
    "interaction",
    "layers",
    "heads",
    "first_layer",
    "n_queries",
    "depth",
    "max_length",
    "seed",
    "git_revision",
]
PER_QUERY_COLUMNS = [*ID_COLUMNS, "query_id", "measure", "value", "baseline_value", "delta", "bm25_value"]
#: Against the first stage (the candidates' own BM25 order), on the same queries.
BM25_COLUMNS = ["bm25_mean", "delta_bm25", "p_bm25", "baseline_delta_bm25", "baseline_p_bm25"]
SUMMARY_COLUMNS = [
    *ID_COLUMNS,
    "measure",
    "n",
    "mean",
    "baseline_mean",
    "delta",
    "t",
    "p",
    "ci_low",
    "ci_high",
    "wins",
    "ties",
    "losses",
    *BM25_COLUMNS,
]


@dataclass
class Settings:
    """Everything besides model and mask that determines a run's numbers."""

    collection: str = "dl19"
    queries: int | None = None
    depth: int | None = None
    max_length: int | None = None  # None: the model folder's own (sentence_bert_config), else 256
    batch_size: int = 32
    seed: int = 0
    n_boot: int = DEFAULT_BOOTSTRAP
    tie_tol: float = DEFAULT_TIE_TOL
    measures: tuple[str, ...] | None = None  # None: the collection's measures


@dataclass
class RunResult:
    run_id: str
    spec: MaskSpec
    compiled: CompiledMask
    per_query: pd.DataFrame
    summary: pd.DataFrame
    seconds: float
    scores: np.ndarray = field(repr=False, default=None)

    @property
    def notices(self) -> list[str]:
        return self.compiled.notices


def _pairs_hash(rs: RerankSet) -> str:
    ids = "\n".join(f"{q}\t{d}" for q, d in zip(rs.candidates["query_id"], rs.candidates["doc_id"]))
    return hashlib.sha1(ids.encode()).hexdigest()[:16]


def baseline_key(fingerprint: str, rs: RerankSet, max_length: int) -> str:
    depth = int(rs.candidates["rank"].max()) if len(rs.candidates) else 0
    raw = json.dumps([fingerprint, rs.name, rs.source, len(rs.queries), depth, max_length, _pairs_hash(rs)])
    return hashlib.sha1(raw.encode()).hexdigest()[:20]


def baseline_scores(
    ce: CrossEncoder,
    rs: RerankSet,
    *,
    fingerprint: str | None = None,
    batch_size: int = 32,
    progress: bool = False,
    use_cache: bool = True,
) -> tuple[np.ndarray, bool]:
    """Unablated scores of every candidate (candidates order) and whether they came from the disk cache."""
    fingerprint = fingerprint or model_fingerprint(ce)
    path = cache_dir() / "ablation-baselines" / f"{baseline_key(fingerprint, rs, ce.max_length)}.npy"
    if use_cache and path.is_file():
        try:
            scores = np.load(path)
            if scores.shape == (len(rs.candidates),):
                return scores, True
        except (OSError, ValueError):
            pass  # unreadable cache entry: recompute and overwrite
    scores = ce.score(rs.pairs(), batch_size=batch_size, progress=progress)
    if use_cache:
        buf = io.BytesIO()
        np.save(buf, scores)
        atomic_write_bytes(path, buf.getvalue())
    return scores, False


def _layers_label(compiled: CompiledMask) -> str:
    return format_ranges(compiled.masked_layers) if not compiled.is_empty else ""


def _heads_label(compiled: CompiledMask) -> str:
    if compiled.is_empty:
        return ""
    return "all" if not compiled.per_head else format_ranges(compiled.masked_heads())


class Experiment:
    """A cross-encoder on a rerank set, with its baseline; runs mask specs and compares them with it."""

    def __init__(
        self,
        ce: CrossEncoder,
        rs: RerankSet,
        settings: Settings | None = None,
        *,
        model_label: str | None = None,
        progress: bool = False,
        use_cache: bool = True,
        prefix: bool = True,
    ):
        self.ce, self.rs = ce, rs
        self.settings = settings or Settings(collection=rs.name)
        self.model_label = model_label or ce.name
        self.progress = progress
        self.measures = [str(m) for m in parse_measures(self.settings.measures or rs.measures)]
        self.pairs = rs.pairs()
        if not self.pairs:
            raise BadInput(f"collection {rs.name!r} has no candidate pairs to re-rank")
        self.fingerprint = model_fingerprint(ce)
        self.baseline, self.baseline_cached = baseline_scores(
            ce,
            rs,
            fingerprint=self.fingerprint,
            batch_size=self.settings.batch_size,
            progress=progress,
            use_cache=use_cache,
        )
        self.baseline_table = per_query(rs.run_from_scores(self.baseline), rs.qrels, self.measures)
        self.first_stage_table = per_query(rs.first_stage_run(), rs.qrels, self.measures)
        self.use_prefix = prefix and supports_prefix(ce)
        self._prefix: PrefixCache | None = None
        self._batches: list | None = None
        self._revision = git_revision()

    # --- identity
    @property
    def depth(self) -> int:
        return int(self.rs.candidates["rank"].max())

    def compile(self, spec: MaskSpec) -> CompiledMask:
        return compile_for(self.ce, spec)

    def run_id(self, spec: MaskSpec, compiled: CompiledMask | None = None) -> str:
        """A hash of everything that determines the run's numbers. The mask enters as its *compiled* table, so
        equivalent specs (``doc2query`` and ``doc2query`` over layers ``0-99`` clamped to the model's) share
        one id and are computed and stored once; so do a per-head rule naming every head and an all-heads
        one."""
        s = self.settings
        compiled = compiled or self.compile(spec)
        raw = json.dumps(
            [
                self.fingerprint,
                self.rs.name,
                len(self.rs.queries),
                self.depth,
                self.ce.max_length,
                compiled.key(),  # per-head or not: same
                s.seed,
                s.n_boot,
                s.tie_tol,
                self.measures,
                _pairs_hash(self.rs),
            ]
        )
        return hashlib.sha1(raw.encode()).hexdigest()[:12]

    # --- scoring
    @property
    def batches(self) -> list:
        """The rerank set tokenized once (length-sorted batches; ``batch.index`` maps back)."""
        if self._batches is None:
            self._batches = list(self.ce.batches(self.pairs, self.settings.batch_size))
        return self._batches

    def prefix_cache(self) -> PrefixCache:
        if self._prefix is None:
            self._prefix = PrefixCache(self.ce, self.pairs, batches=self.batches)
        return self._prefix

    def scores(
        self,
        compiled: CompiledMask,
        *,
        prefix: bool | None = None,
        cls_only_last: bool = True,
        rows_shortcut: bool = True,
    ) -> np.ndarray:
        """Scores of every candidate under ``compiled``: from the prefix-state cache, or (``prefix=False``)
        the full masked forward of every batch."""
        if compiled.is_empty:
            return self.baseline.copy()
        use_prefix = self.use_prefix if prefix is None else (prefix and supports_prefix(self.ce))
        if use_prefix:
            return self.prefix_cache().score(
                compiled, cls_only_last=cls_only_last, rows_shortcut=rows_shortcut
            )
        return with_mask(self.ce, compiled).score_batches(
            self.batches, len(self.pairs), progress=self.progress
        )

    # --- one run
    def run(
        self, spec: MaskSpec, *, prefix: bool | None = None, compiled: CompiledMask | None = None
    ) -> RunResult:
        compiled = compiled or self.compile(spec)
        start = time.perf_counter()
        scores = self.scores(compiled, prefix=prefix)
        seconds = time.perf_counter() - start
        return self.compare(spec, compiled, scores, seconds)

    def compare(
        self, spec: MaskSpec, compiled: CompiledMask, scores: np.ndarray, seconds: float = 0.0
    ) -> RunResult:
        s = self.settings
        ablated = per_query(self.rs.run_from_scores(scores), self.rs.qrels, self.measures)
        merged = ablated.merge(
            self.baseline_table.rename(columns={"value": "baseline_value"}),
            on=["query_id", "measure"],
            how="inner",
            validate="one_to_one",
        )
        merged["delta"] = merged["value"] - merged["baseline_value"]
        merged = self.with_bm25(merged)
        run_id = self.run_id(spec, compiled)
        ident = {
            "run_id": run_id,
            "collection": self.rs.name,
            "model": self.model_label,
            "model_fingerprint": self.fingerprint,
            "spec": spec.to_json(),
            "spec_label": spec.label,
            "interaction": " + ".join(r.interaction for r in spec.rules),
            "layers": _layers_label(compiled),
            "heads": _heads_label(compiled),
            "first_layer": -1 if compiled.first_layer is None else compiled.first_layer,
            "n_queries": len(self.rs.queries),
            "depth": self.depth,
            "max_length": self.ce.max_length,
            "seed": s.seed,
            "git_revision": self._revision,
        }
        order = {m: i for i, m in enumerate(self.measures)}
        merged = merged.sort_values(
            ["measure", "query_id"], key=lambda c: c.map(order) if c.name == "measure" else c
        ).reset_index(drop=True)
        per_q = pd.concat([pd.DataFrame([ident] * len(merged)), merged], axis=1)[PER_QUERY_COLUMNS]
        rows = []
        for measure in self.measures:
            part = merged[merged["measure"] == measure]
            st = paired_stats(
                part["value"].to_numpy(),
                part["baseline_value"].to_numpy(),
                tie_tol=s.tie_tol,
                n_boot=s.n_boot,
                seed=s.seed,
            )
            rows.append({**ident, "measure": measure, **st.as_dict(), **self._against_bm25(part)})
        summary = pd.DataFrame(rows)[SUMMARY_COLUMNS]
        return RunResult(run_id, spec, compiled, per_q, summary, seconds, scores)

    def with_bm25(self, per_q: pd.DataFrame) -> pd.DataFrame:
        """Per-query rows (``query_id, measure, …``) with ``bm25_value``, the first stage's value of the same
        query and measure (left join: the rows keep their order)."""
        return per_q.drop(columns="bm25_value", errors="ignore").merge(
            self.first_stage_table.rename(columns={"value": "bm25_value"}),
            on=["query_id", "measure"],
            how="left",
            validate="one_to_one",
        )

    def against_bm25(self, per_q: pd.DataFrame) -> pd.DataFrame:
        """The :data:`BM25_COLUMNS` of one run from its per-query rows (``query_id, measure, value,
        baseline_value``), one row per measure: for runs stored before those columns existed."""
        merged = self.with_bm25(per_q[["query_id", "measure", "value", "baseline_value"]])
        return pd.DataFrame(
            [{"measure": m, **self._against_bm25(part)} for m, part in merged.groupby("measure", sort=False)],
            columns=["measure", *BM25_COLUMNS],
        )

    def _against_bm25(self, part: pd.DataFrame) -> dict:
        """One measure's ablated and full model against the first stage (paired t-test over queries)."""
        s = self.settings
        bm25 = part["bm25_value"].to_numpy()
        ablated, full = (
            paired_stats(part[c].to_numpy(), bm25, tie_tol=s.tie_tol, n_boot=0, seed=s.seed)
            for c in ("value", "baseline_value")
        )
        return {
            "bm25_mean": float(np.mean(bm25)) if len(bm25) else np.nan,
            "delta_bm25": ablated.delta,
            "p_bm25": ablated.p,
            "baseline_delta_bm25": full.delta,
            "baseline_p_bm25": full.p,
        }

    def close(self) -> None:
        if self._prefix is not None:
            self._prefix.close()
            self._prefix = None


# ------------------------------------------------------------------------------------ results files
def write_results(results: list[RunResult], out_dir: Path, meta: dict) -> Path:
    """Append runs to ``<out>/per_query`` and ``<out>/summary`` (rows of a rerun ``run_id`` are replaced)."""
    out_dir = Path(out_dir)
    ids = {r.run_id for r in results}
    runs_meta = [
        {
            "run_id": r.run_id,
            "spec": r.spec.to_dict(),
            "label": r.spec.label,
            "notices": r.notices,
            "seconds": round(r.seconds, 3),
        }
        for r in results
    ]
    for table, frames in (
        ("per_query", [r.per_query for r in results]),
        ("summary", [r.summary for r in results]),
    ):
        new = pd.concat(frames, ignore_index=True)
        path = out_dir / f"{table}.parquet"
        if path.exists():
            old = read_table(out_dir, table)
            new = pd.concat([old[~old["run_id"].isin(ids)], new], ignore_index=True)
        prev = read_manifest(out_dir, table) if (out_dir / f"{table}.json").exists() else {}
        prev_runs = [r for r in prev.get("runs", []) if r.get("run_id") not in ids]
        write_table(new, out_dir, table, manifest(**{**meta, "runs": prev_runs + runs_meta}))
    return out_dir / "summary.parquet"


def stored_summary(out_dir: Path, run_id: str) -> pd.DataFrame | None:
    """The summary rows of ``run_id`` in ``<out_dir>``, or None."""
    path = Path(out_dir) / "summary.parquet"
    if not path.exists():
        return None
    table = read_table(out_dir, "summary")
    rows = table[table["run_id"] == run_id]
    return rows.reset_index(drop=True) if len(rows) else None


def lacks_bm25(summary: pd.DataFrame) -> bool:
    """Whether summary rows were stored before the :data:`BM25_COLUMNS` existed."""
    return any(c not in summary for c in BM25_COLUMNS) or bool(summary["bm25_mean"].isna().any())


def add_bm25(out_dir: Path, run_id: str, exp: Experiment) -> pd.DataFrame | None:
    """Give a run stored before the BM25 columns existed its ``bm25_value`` per query and its
    :data:`BM25_COLUMNS`, computed from its stored per-query rows against ``exp``'s first stage (the same
    model and rerank set: the run id says so); both tables are rewritten atomically, per-query first, and
    their manifests kept (plus ``bm25_added``). Nothing is rescored. Returns the run's summary rows, or None
    when its per-query rows are gone."""
    out_dir = Path(out_dir)
    try:
        pq = read_table(out_dir, "per_query")
    except BadInput:
        return None
    mine = pq["run_id"] == run_id
    if not mine.any():
        return None
    if "bm25_value" not in pq:
        pq["bm25_value"] = np.nan
    pq.loc[mine, "bm25_value"] = exp.with_bm25(pq[mine])["bm25_value"].to_numpy()
    summary = read_table(out_dir, "summary")
    filled = exp.against_bm25(pq[mine]).set_index("measure")
    rows = summary["run_id"] == run_id
    for c in BM25_COLUMNS:
        if c not in summary:
            summary[c] = np.nan
        summary.loc[rows, c] = summary.loc[rows, "measure"].map(filled[c]).to_numpy()
    for table, df in (("per_query", pq), ("summary", summary)):
        meta = read_manifest(out_dir, table) if (out_dir / f"{table}.json").exists() else {}
        added = [r for r in meta.get("bm25_added", []) if r != run_id] + [run_id]
        write_table(df, out_dir, table, {**meta, "bm25_added": added})
    return summary[rows].reset_index(drop=True)


# -------------------------------------------------------------------------------------- printing
def format_summary(summary: pd.DataFrame, *, title: str | None = None) -> str:
    """A one-screen text table: one row per run × measure."""
    cols = {
        "spec_label": "mask",
        "layers": "layers",
        "measure": "measure",
        "baseline_mean": "full",
        "mean": "ablated",
        "delta": "Δ",
        "ci": "95% CI",
        "p": "p (t-test)",
        "wtl": "W/T/L",
    }
    df = summary.copy()
    df["ci"] = [f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(df["ci_low"], df["ci_high"])]
    df["wtl"] = [f"{w}/{t}/{lo}" for w, t, lo in zip(df["wins"], df["ties"], df["losses"])]
    for c in ("baseline_mean", "mean"):
        df[c] = df[c].map("{:.4f}".format)
    df["delta"] = summary["delta"].map("{:+.4f}".format)
    df["p"] = summary["p"].map(_fmt_p)
    if df["spec_label"].nunique() == 1:
        cols.pop("spec_label")
        cols.pop("layers")
    df["spec_label"] = df["spec_label"].str.slice(0, 40)
    table = df[list(cols)].rename(columns=cols).to_string(index=False)
    bm25 = format_against_bm25(summary)
    text = f"{table}\n{bm25}" if bm25 else table
    return f"{title}\n{text}" if title else text


def _fmt_p(p: float) -> str:
    return "nan" if np.isnan(p) else (f"{p:.2g}" if p < 0.001 else f"{p:.3f}")


def format_against_bm25(summary: pd.DataFrame) -> str:
    """The full and the ablated model against the first stage (the candidates' own BM25 order), one line
    per run × measure; empty for a table written before these columns existed."""
    if any(c not in summary for c in BM25_COLUMNS) or summary["bm25_mean"].isna().all():
        return ""
    rows = summary.dropna(subset=["bm25_mean"])
    many = rows["spec_label"].nunique() > 1
    wm, wl = rows["measure"].str.len().max(), rows["spec_label"].str.slice(0, 40).str.len().max()
    lines = ["against BM25, the candidates' own order (Δ, paired t-test p):"]
    for _, r in rows.iterrows():
        mask = f"{str(r['spec_label'])[:40]:{wl}s}  " if many else ""
        lines.append(
            f"  {mask}{r['measure']:>{wm}s}  BM25 {r['bm25_mean']:.4f}"
            f"  full {r['baseline_delta_bm25']:+.4f} (p {_fmt_p(r['baseline_p_bm25'])})"
            f"  ablated {r['delta_bm25']:+.4f} (p {_fmt_p(r['p_bm25'])})"
        )
    return "\n".join(lines)


def run_meta(exp: Experiment, kind: str, **extra) -> dict:
    settings = asdict(exp.settings) | ({"model_kind": exp.ce.describe()} if exp.ce.signature else {})
    return {
        "kind": kind,
        "model": exp.model_label,
        "model_fingerprint": exp.fingerprint,
        "collection": exp.rs.describe(),
        "settings": settings,
        **extra,
    }


def pbar(total: int, desc: str, enabled: bool):
    return progress_bar(total=total, desc=desc, disable=not enabled, unit="cell")
