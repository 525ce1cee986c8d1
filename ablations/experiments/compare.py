"""Compare the cross-encoder, the masked (not retrained) MICE model, the retrained MICE model and the
late-interaction baselines on the same rerank sets: effectiveness in and out of domain, latency, storage.

The library behind ``python -m ablations.compare``: :class:`CompareConfig` in, :func:`compare` out.

Every model re-ranks the same candidates (BM25 top-``--depth``) of every collection; measures are the
collection's (nDCG@10, MRR@10 = ``RR(rel=2)@10`` on TREC DL / ``RR@10`` on BEIR, R@100); per query and
measure each model is compared with the cross-encoder (paired t-test, bootstrap CI, wins/ties/losses;
:func:`ablations.evaluation.stats.paired_stats`). Collections: TREC DL 2019 is in-domain (MS MARCO; the
reference never trained on it); every BEIR collection under ``$MICE_SHARED/data/beir`` is out-of-domain.

Latency: the first ``--latency-queries`` queries of the first collection, each query's candidates (all of
them, 100 for a BM25 top-100, whatever ``--depth`` is) scored in one call (``score(pairs,
batch_size=100)``, what a user re-ranking 100 candidates does), every model in turn query by query
(interleaved), after one warm-up query; median milliseconds per query. Models that
precompute documents (MICE doc-cache, MaxSim, LITE) read them from an index built beforehand over those
queries' candidates (build time reported apart; its bytes per document are the ``storage_bytes_per_doc``
column). ``torch`` threads: ``--threads``.

Resume: each model × collection's per-query table is kept in ``<out>/.partial/`` as soon as it is scored,
keyed by the model's fingerprint (weights, and the MICE configuration and plan where there are) and the rerank
set (queries and candidates); rerunning an interrupted comparison with the same ``--out`` scores only what is
missing, and so does a rerun that adds a model (``--lite`` once it is trained). Latency is always measured
again. A retrained model has another fingerprint, so its stale entry is never read; delete the folder to
score everything again.

Output (the common results format, :mod:`ablations.results`): ``<out>/per_query.parquet`` (model,
collection, domain, query_id, measure, value) and ``<out>/comparison.parquet`` (one row per model ×
collection × measure: mean, delta / t / p / CI / W-T-L against the cross-encoder, latency, storage,
parameters), each with a JSON manifest of kind ``mice-compare``.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pyarrow import ArrowException

from ablations.data.collections import RerankSet, load_collection
from ablations.evaluation.measures import per_query
from ablations.evaluation.stats import paired_stats
from ablations.masking.masked import MaskedCrossEncoder
from ablations.masking.masks import MaskSpec, Rule
from ablations.mice.config import MiceConfig, preset
from ablations.mice.late_interaction import LateInteractionScorer
from ablations.mice.model import MiceModel
from ablations.paths import data_dir, resolve_model
from ablations.results import atomic_write_parquet, atomic_write_text
from probe.errors import BadInput
from probe.model import CrossEncoder, Scorer, model_fingerprint

REFERENCE = "cross-encoder"
#: The first stage's own ranking (the candidates' BM25 order), a row when ``first_stage`` is set.
FIRST_STAGE = "bm25"
#: MS MARCO collections: in domain for an MS MARCO cross-encoder (the reference never trained on them).
IN_DOMAIN = ("dl19", "dl20")


@dataclass
class CompareConfig:
    """What ``python -m ablations.compare`` compares, on what, and how (its flags, one field each)."""

    reference: str = "reference"
    # MICE configuration (file or preset): on the reference's weights, not retrained
    config: str | None = None
    # mask presets / interactions: the reference under each mask (one row each, named by the mask)
    masks: list[str] | None = None
    # collections the mask rows are scored on (None: all); each mask row costs a full cross-encoder pass
    mask_collections: list[str] | None = None
    mice: str | None = None  # retrained MICE model folder
    # more retrained MICE models (another recipe), label -> folder: rows "mice-retrained-<label>"
    mice_variants: dict[str, str] | None = None
    maxsim: str | None = None
    lite: str | None = None
    # a row for the first stage itself (the candidates' BM25 ranking: no model, no latency measured)
    first_stage: bool = False
    collections: list[str] | None = None  # None: dl19 in-domain + every BEIR collection available
    queries: int | None = None
    ood_queries: int | None = None
    depth: int | None = None
    max_length: int | None = None
    batch_size: int = 100
    latency_queries: int = 5
    threads: int | None = None
    bootstrap: int = 10000
    seed: int = 0
    out: Path = Path("results/mice")
    progress: bool = False

    def __post_init__(self):
        if self.latency_queries < 1 or self.batch_size < 1:
            raise BadInput("--latency-queries and --batch-size must be >= 1")
        for label in self.mice_variants or {}:
            if not MICE_VARIANT_LABEL.fullmatch(label):
                raise BadInput(
                    f"--mice-variant label {label!r}: use letters, digits, '.', '_' or '-' (e.g. cls=FOLDER)"
                )


#: A ``--mice-variant`` label: short, safe in a row name and a file name.
MICE_VARIANT_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
MICE_RETRAINED = "mice-retrained"


def parse_variants(items: list[str] | None) -> dict[str, str] | None:
    """``["LABEL=FOLDER", ...]`` (the ``--mice-variant`` flag) -> ``{label: folder}``; bad input: one line."""
    if not items:
        return None
    out: dict[str, str] = {}
    for item in items:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            raise BadInput(f"--mice-variant {item!r}: expected LABEL=FOLDER (e.g. cls=runs/mice12/model-c)")
        if label in out:
            raise BadInput(f"--mice-variant label {label!r} is given twice")
        out[label] = folder
    return out


def default_collections() -> list[str]:
    """TREC DL 2019 (in-domain) and every BEIR collection available (out-of-domain)."""
    out = ["dl19"]
    try:
        beir = data_dir() / "beir"
        out += sorted(p.name for p in beir.iterdir() if p.is_dir()) if beir.is_dir() else []
    except BadInput:
        pass
    return out


def query_pairs(rs: RerankSet, qid: str) -> list[tuple[str, str]]:
    cand = rs.candidates[rs.candidates["query_id"] == qid]
    return [(rs.queries[qid], rs.docs[d]) for d in cand["doc_id"]]


def interleaved_latency_ms(
    models: dict[str, Scorer], rs: RerankSet, query_ids: list[str], *, batch_size: int = 100, warmup: int = 1
) -> dict[str, list[float]]:
    """Milliseconds to score each query's candidates in one ``score`` call (after ``warmup`` queries), for
    every model, interleaved query by query (each query scored by every model in turn), so a change of
    machine load hits every model alike."""
    for qid in query_ids[:warmup]:
        for scorer in models.values():
            scorer.score(query_pairs(rs, qid), batch_size=batch_size)
    out: dict[str, list[float]] = {m: [] for m in models}
    for qid in query_ids:
        pairs = query_pairs(rs, qid)
        for model, scorer in models.items():
            start = time.perf_counter()
            scorer.score(pairs, batch_size=batch_size)
            out[model].append((time.perf_counter() - start) * 1000)
    return out


def _domain(name: str) -> str:
    return "ID" if name in IN_DOMAIN else "OOD"


def build_models(cfg: CompareConfig) -> tuple[dict[str, Scorer], dict[str, str]]:
    ref_path = resolve_model(cfg.reference)
    ce = CrossEncoder.from_pretrained(ref_path, max_length=cfg.max_length)
    models: dict[str, Scorer] = {REFERENCE: ce}
    paths = {REFERENCE: ref_path}
    for mask in cfg.masks or []:
        models[mask] = MaskedCrossEncoder(ce, MaskSpec([Rule(mask)]))
        paths[mask] = f"{ref_path} with {mask} removed"
    if cfg.config:
        mice_cfg = _mice_config(cfg.config, ce, ref_path)
        models["mice-masked"] = MiceModel(
            ce, mice_cfg, name="mice-masked"
        )  # the reference's weights, not retrained
        paths["mice-masked"] = f"{cfg.config} on {ref_path}"
    retrained = ([(MICE_RETRAINED, cfg.mice)] if cfg.mice else []) + [
        (f"{MICE_RETRAINED}-{label}", folder) for label, folder in (cfg.mice_variants or {}).items()
    ]
    for row, folder in retrained:
        models[row] = MiceModel.load(folder)
        models[row].name = row
        paths[row] = str(folder)
    for kind in ("maxsim", "lite"):
        folder = getattr(cfg, kind)
        if folder:
            models[kind] = LateInteractionScorer.load(folder)
            paths[kind] = str(folder)
    if len(models) == 1:
        raise BadInput(
            "nothing to compare: give --config (masked MICE), --masks, --mice, --maxsim and/or --lite"
        )
    return models, paths


def _mice_config(source: str, ce: CrossEncoder, ref_path: str) -> MiceConfig:
    """A MICE configuration file, or a preset (``mice-final``, ``mice-l4+3``, …) made for the reference."""
    key = str(source).strip().lower()
    if key.startswith("mice-") and not Path(source).exists():
        return preset(key, ce.num_layers, ce.num_heads, ref_path, max_length=ce.max_length)
    return MiceConfig.load(source)


def _indexable(scorer: Scorer) -> bool:
    return isinstance(scorer, LateInteractionScorer) or (
        isinstance(scorer, MiceModel) and scorer.plan.shape == "doc-cache"
    )


PARTIAL = ".partial"


def _model_key(scorer: Scorer) -> str:
    """What makes a model's scores what they are: its weights (and MICE configuration), hashed."""
    if isinstance(scorer, MiceModel):
        return f"{scorer.fingerprint()}/{scorer.config.fingerprint()}/{scorer.plan.shape}"
    if isinstance(scorer, LateInteractionScorer):
        return scorer.fingerprint()
    if isinstance(scorer, MaskedCrossEncoder):
        return f"{model_fingerprint(scorer.ce)}/{scorer.mask.key()}"
    return model_fingerprint(scorer)


def _set_key(rs: RerankSet) -> str:
    h = hashlib.sha1(json.dumps(rs.describe(), sort_keys=True, default=str).encode())
    h.update(pd.util.hash_pandas_object(rs.candidates[["query_id", "doc_id"]], index=False).values.tobytes())
    return h.hexdigest()[:16]


def _partial_paths(out: Path, collection: str, model: str) -> tuple[Path, Path]:
    stem = hashlib.sha1(f"{collection}|{model}".encode()).hexdigest()[:12]  # collection may be a path
    return out / PARTIAL / f".{stem}.parquet", out / PARTIAL / f".{stem}.key"


def _load_partial(out: Path, collection: str, model: str, key: str) -> tuple[pd.DataFrame, float] | None:
    table_path, key_path = _partial_paths(out, collection, model)
    try:
        saved = json.loads(key_path.read_text())
        if saved.get("key") != key:
            return None
        return pd.read_parquet(table_path), float(saved["seconds"])
    except (OSError, ValueError, KeyError, TypeError, ArrowException):  # absent, other run, half-written
        return None


def _save_partial(
    out: Path, collection: str, model: str, key: str, table: pd.DataFrame, seconds: float
) -> None:
    table_path, key_path = _partial_paths(out, collection, model)
    atomic_write_parquet(table, table_path)  # table first: a key file always names a complete table
    atomic_write_text(
        key_path,
        json.dumps({"key": key, "collection": collection, "model": model, "seconds": seconds}) + "\n",
    )


def compare(cfg: CompareConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    models, paths = build_models(cfg)
    collections = cfg.collections or default_collections()
    sets, first = {}, None
    for name in collections:
        rs = load_collection(name)
        if first is None:
            first = rs
        cap = cfg.queries if _domain(name) == "ID" else (cfg.ood_queries or cfg.queries)
        sets[name] = rs.subset(cap, cfg.depth)
    if cfg.mask_collections is not None:
        unknown = [c for c in cfg.mask_collections if c not in sets]
        if unknown:
            raise BadInput(
                f"mask collection {unknown[0]!r} is not one of the compared collections: {', '.join(sets)}"
            )
    masked_rows = set(cfg.masks or [])
    tidy, facts = [], {m: {"parameters": _params(s)} for m, s in models.items()}
    if cfg.first_stage:
        # BM25 retrieval is not part of re-ranking: no latency or index size is measured for it here
        facts[FIRST_STAGE] = {
            "parameters": 0,
            "latency_ms_per_query": np.nan,
            "storage_bytes_per_doc": np.nan,
        }
    out = Path(cfg.out)
    model_keys = {m: _model_key(s) for m, s in models.items()}
    w = name_width([FIRST_STAGE, *models])
    for name, rs in sets.items():
        pairs = rs.pairs()
        print(f"{name}: {len(rs.queries)} queries, {len(pairs)} pairs ({_domain(name)})", flush=True)
        set_key = _set_key(rs)
        if cfg.first_stage:
            tidy.append(first_stage_table(rs, name))
            nd = tidy[-1].query("measure == 'nDCG@10'")["value"].mean()
            print(f"  {FIRST_STAGE:{w}s} nDCG@10 {nd:.4f}  (the candidates' own order)", flush=True)
        for model, scorer in models.items():
            if model in masked_rows and cfg.mask_collections is not None and name not in cfg.mask_collections:
                only = ", ".join(cfg.mask_collections)
                print(f"  {model:{w}s} not scored on {name} (mask collections: {only})", flush=True)
                continue
            key = f"{model_keys[model]}|{set_key}"
            resumed = _load_partial(out, name, model, key)
            if resumed is not None:
                table, seconds = resumed
            else:
                start = time.perf_counter()
                scores = scorer.score(pairs, batch_size=cfg.batch_size, progress=cfg.progress)
                seconds = time.perf_counter() - start
                table = per_query(rs.run_from_scores(scores), rs.qrels, rs.measures)
                table.insert(0, "domain", _domain(name))
                table.insert(0, "collection", name)
                table.insert(0, "model", model)
                _save_partial(out, name, model, key, table, seconds)
            tidy.append(table)
            facts[model].setdefault("score_seconds", {})[name] = round(seconds, 2)
            nd = table[table["measure"] == "nDCG@10"]["value"].mean()
            print(
                f"  {model:{w}s} nDCG@10 {nd:.4f}  "
                f"({seconds:.0f} s{', resumed' if resumed is not None else ''})",
                flush=True,
            )
    per_q = pd.concat(tidy, ignore_index=True)
    # latency (and storage) on the first collection's first queries
    # latency on every candidate of the first collection's first queries (100 for BM25 top-100), whatever
    # --depth the effectiveness columns used
    lat_rs = first.subset(cfg.latency_queries)
    qids = lat_rs.query_ids[: cfg.latency_queries]
    docs = [lat_rs.docs[d] for d in lat_rs.candidates[lat_rs.candidates["query_id"].isin(qids)]["doc_id"]]
    with tempfile.TemporaryDirectory(prefix="mice-compare-") as tmp:
        for model, scorer in models.items():
            if _indexable(scorer):
                start = time.perf_counter()
                index = scorer.build_index(docs, Path(tmp) / f"{model}.safetensors")
                facts[model]["index_build_seconds_per_doc"] = (time.perf_counter() - start) / len(index)
                facts[model]["storage_bytes_per_doc"] = index.bytes_per_doc
            else:
                facts[model]["storage_bytes_per_doc"] = 0.0
        times = interleaved_latency_ms(models, lat_rs, qids, batch_size=100)
        for model, scorer in models.items():
            if _indexable(scorer):
                scorer.detach_index()
            facts[model]["latency_ms_per_query"] = statistics.median(times[model])
            facts[model]["latency_ms_all"] = [round(t, 1) for t in times[model]]
            print(
                f"  latency {model:{w}s} {facts[model]['latency_ms_per_query']:.0f} ms/query "
                f"(median of {len(times[model])}), "
                f"storage {facts[model]['storage_bytes_per_doc'] / 1024:.1f} KiB/doc",
                flush=True,
            )
    summary = summarise(per_q, facts, cfg)
    meta = {
        "kind": "mice-compare",
        "reference": REFERENCE,
        "in_domain": [c for c in sets if _domain(c) == "ID"],
        "models": paths,
        "collections": {n: rs.describe() for n, rs in sets.items()},
        "latency": {
            "collection": lat_rs.name,
            "queries": qids,
            "candidates_per_query": int(
                lat_rs.candidates[lat_rs.candidates["query_id"].isin(qids)]
                .groupby("query_id")
                .size()
                .median()
            ),
            "batch_size": 100,
            "torch_threads": torch.get_num_threads(),
        },
        "facts": facts,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
    }
    return per_q, summary, meta


def first_stage_table(rs: RerankSet, name: str) -> pd.DataFrame:
    """Per-query measures of the candidates' own (BM25) ranking: scored by rank, so ties keep its order."""
    table = per_query(rs.first_stage_run(), rs.qrels, rs.measures)
    table.insert(0, "domain", _domain(name))
    table.insert(0, "collection", name)
    table.insert(0, "model", FIRST_STAGE)
    return table


def _params(scorer: Scorer) -> int:
    if hasattr(scorer, "num_parameters"):
        return int(scorer.num_parameters())
    if isinstance(scorer, MaskedCrossEncoder):
        scorer = scorer.ce
    return int(sum(p.numel() for p in scorer.model.parameters()))


def summarise(per_q: pd.DataFrame, facts: dict, cfg: CompareConfig) -> pd.DataFrame:
    rows = []
    ref = (
        per_q[per_q["model"] == REFERENCE]
        .set_index(["collection", "measure", "query_id"])["value"]
        .sort_index()
    )
    for (model, collection, measure), part in per_q.groupby(["model", "collection", "measure"], sort=False):
        base = ref.loc[collection, measure].reindex(part["query_id"]).to_numpy()
        st = paired_stats(part["value"].to_numpy(), base, n_boot=cfg.bootstrap, seed=cfg.seed)
        f = facts[model]
        rows.append(
            {
                "model": model,
                "collection": collection,
                "domain": part["domain"].iloc[0],
                "measure": measure,
                **st.as_dict(),
                "reference": model == REFERENCE,
                "latency_ms_per_query": f["latency_ms_per_query"],
                "storage_bytes_per_doc": f["storage_bytes_per_doc"],
                "parameters": f["parameters"],
            }
        )
    out = pd.DataFrame(rows)
    out.loc[out["reference"], ["t", "p"]] = np.nan
    return out


def name_width(models) -> int:
    """The model column's width: 16, or the longest row name (a variant's, ``mice-retrained-LABEL``) + 2."""
    return max(16, *(len(m) + 2 for m in models))


def format_table(summary: pd.DataFrame) -> str:
    """One line per model: each collection's nDCG@10 / MRR@10 (with p against the cross-encoder), cost."""
    lines = []
    cols = list(dict.fromkeys(summary["collection"]))
    w = name_width(summary["model"])
    head = (
        f"{'model':{w}s}"
        + "".join(f"{c + ' nDCG@10':>22s}{c + ' MRR@10':>20s}" for c in cols)
        + f"{'ms/query':>10s}{'KiB/doc':>9s}{'params':>8s}"
    )
    lines.append(head)
    for model, part in summary.groupby("model", sort=False):
        cells = []
        for c in cols:
            for m in ("nDCG@10", "RR"):
                row = part[
                    (part["collection"] == c)
                    & part["measure"].str.startswith(m)
                    & part["measure"].str.endswith("@10")
                ]
                if row.empty:
                    cells.append("–")
                    continue
                r = row.iloc[0]
                p = "" if r["reference"] or np.isnan(r["p"]) else f" (p={r['p']:.2g})"
                cells.append(f"{r['mean']:.4f}{p}")
        first = part.iloc[0]
        lines.append(
            f"{model:{w}s}"
            + "".join(f"{cells[i]:>22s}{cells[i + 1]:>20s}" for i in range(0, len(cells), 2))
            + fmt_number(first["latency_ms_per_query"], 10, 0)
            + fmt_number(first["storage_bytes_per_doc"] / 1024, 9, 1)
            + f"{first['parameters'] / 1e6:7.1f}M"
        )
    return "\n".join(lines)


def fmt_number(value: float, width: int, digits: int) -> str:
    """A right-aligned number, or '–' where it was not measured (NaN)."""
    return f"{'–':>{width}s}" if not np.isfinite(value) else f"{value:{width}.{digits}f}"
