"""Re-rank a rerank set with a scorer and evaluate it with ir_measures (per query and aggregated).

Library: :func:`rerank`, :func:`per_query`, :func:`aggregate`, :func:`evaluate_runs`.
CLI (the quick-start job): ``python -m ablations.evaluate [--model M] [--collection C] [--out DIR]`` re-ranks
the collection's BM25 candidates with the cross-encoder and prints BM25 and the model side by side; it
writes ``metrics.parquet`` (one row per run × query × measure) + ``metrics.json`` and one TREC run per run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import ir_measures
import pandas as pd

from probe.errors import BadInput, cli
from probe.model import CrossEncoder, Scorer

from .collections import RerankSet, load_collection
from .late_interaction import CONFIG_FILE as LATE_CONFIG
from .paths import mice_config_path, resolve_model
from .readers import write_trec_run
from .results import manifest, write_table


def parse_measures(names) -> list:
    out = []
    for name in names:
        try:
            out.append(ir_measures.parse_measure(name))
        except Exception:
            raise BadInput(f"unknown measure {name!r}; use ir_measures names such as nDCG@10, RR@10, R@100") from None
    return out


def rerank(scorer: Scorer, rs: RerankSet, *, batch_size: int = 32, progress: bool = True) -> pd.DataFrame:
    """Score every candidate; a run table ``query_id, doc_id, score``."""
    return rs.run_from_scores(scorer.score(rs.pairs(), batch_size=batch_size, progress=progress))


def per_query(run: pd.DataFrame, qrels: pd.DataFrame, measures) -> pd.DataFrame:
    """Tidy table ``query_id, measure, value`` (every judged query, 0 for a query the run misses)."""
    measures = parse_measures(measures)
    rows = [(m.query_id, str(m.measure), float(m.value)) for m in ir_measures.iter_calc(measures, qrels, run)]
    df = pd.DataFrame(rows, columns=["query_id", "measure", "value"])
    # ir_measures skips queries absent from the run; they count as 0 for every measure.
    judged = qrels["query_id"].unique()
    full = pd.MultiIndex.from_product([judged, [str(m) for m in measures]], names=["query_id", "measure"])
    return df.set_index(["query_id", "measure"]).reindex(full, fill_value=0.0).reset_index()


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean per run × measure (wide: one row per run, one column per measure)."""
    keys = [c for c in ("collection", "run") if c in table.columns]
    wide = table.groupby([*keys, "measure"], sort=False)["value"].mean().unstack("measure")
    return wide[list(dict.fromkeys(table["measure"]))].reset_index()


def evaluate_runs(runs: dict[str, pd.DataFrame], rs: RerankSet) -> pd.DataFrame:
    """Per-query metrics for several runs on one rerank set, tidy: collection, run, query_id, measure, value."""
    frames = []
    for name, run in runs.items():
        df = per_query(run, rs.qrels, rs.measures)
        df.insert(0, "run", name)
        df.insert(0, "collection", rs.name)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="cross-encoder folder, hub id, 'reference', a MICE configuration "
                   "(mice.json or a retrained MICE folder) or a MaxSim/LITE folder from ablations.retrain "
                   "(default: $MICE_MODEL or the reference cross-encoder)")
    p.add_argument("--collection", action="append", default=None,
                   help="collection name or BEIR folder (repeatable; default dl19)")
    p.add_argument("--queries", type=int, default=None, help="evaluate only the first N queries")
    p.add_argument("--depth", type=int, default=None, help="re-rank only the top-K BM25 candidates")
    p.add_argument("--max-length", type=int, default=None,
                   help="max tokens per pair (default: the model's own, from its folder, else 256)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", type=Path, default=Path("results/evaluate"), help="output folder (default results/evaluate)")
    return p


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    model_path = resolve_model(args.model)
    mice_config = mice_config_path(model_path)  # a MICE configuration or retrained MICE folder, else None
    if mice_config is not None:
        from .mice import MiceModel

        if args.max_length is not None:
            raise BadInput(f"--max-length {args.max_length} does not apply to the MICE model {model_path!r}: "
                           "its mice.json sets the query and document lengths")
        scorer, label = MiceModel.load(mice_config), "mice"
    elif (Path(model_path) / LATE_CONFIG).is_file():  # a MaxSim / LITE baseline from ablations.retrain
        from .late_interaction import LateInteractionScorer

        if args.max_length is not None:
            raise BadInput(f"--max-length {args.max_length} does not apply to the late-interaction model "
                           f"{model_path!r}: its {LATE_CONFIG} sets the query and document lengths")
        scorer = LateInteractionScorer.load(model_path)
        label = scorer.module.kind
    else:
        scorer, label = CrossEncoder.from_pretrained(model_path, max_length=args.max_length), "cross-encoder"
    tables, timings, described = [], {}, []
    for name in args.collection or ["dl19"]:
        rs = load_collection(name).subset(args.queries, args.depth)
        described.append(rs.describe())
        start = time.perf_counter()
        run = rerank(scorer, rs, batch_size=args.batch_size)
        timings[rs.name] = {"seconds": round(time.perf_counter() - start, 2), "pairs": len(run)}
        runs = {"bm25": rs.candidates[["query_id", "doc_id", "score"]], label: run}
        for tag, r in runs.items():
            write_trec_run(r, args.out / f"{rs.name}.{tag}.trec", tag)
        tables.append(evaluate_runs(runs, rs))
    table = pd.concat(tables, ignore_index=True)
    meta = manifest(kind="evaluate", model=model_path, collections=described,
                    settings={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    timings=timings)
    path = write_table(table, args.out, "metrics", meta)
    summary = aggregate(table)
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 120):
        print(summary.to_string(index=False))
    print(f"wrote {path} and TREC runs in {args.out}")
    return 0


if __name__ == "__main__":
    main()
