"""Re-rank collections with a model and evaluate it with ir_measures, beside BM25 (the quick-start job).

    python -m ablations.evaluate [--model M] [--collection C ...] [--queries N] [--depth K] [--out DIR]

Prints BM25 and the model side by side; writes ``metrics.parquet`` (one row per run × query × measure) +
``metrics.json`` and one TREC run per run. Library: :mod:`ablations.evaluation`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ablations.cliargs import add_max_query_length
from ablations.evaluation.measures import aggregate
from ablations.evaluation.rerank import evaluate_model
from ablations.paths import resolve_model
from ablations.results import check_output_dir
from ablations.scorers import load_scorer, run_label
from probe.errors import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default=None,
        help="cross-encoder folder, hub id, 'reference', a MICE configuration "
        "(mice.json or a retrained MICE folder) or a MaxSim/LITE folder from ablations.retrain "
        "(default: $MICE_MODEL or the reference cross-encoder)",
    )
    p.add_argument(
        "--collection",
        action="append",
        default=None,
        help="collection name or BEIR folder (repeatable; default dl19)",
    )
    p.add_argument("--queries", type=int, default=None, help="evaluate only the first N queries")
    p.add_argument("--depth", type=int, default=None, help="re-rank only the top-K BM25 candidates")
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="max tokens per pair (default: the model's own, from its folder, else 256)",
    )
    add_max_query_length(p)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--out", type=Path, default=Path("results/evaluate"), help="output folder (default results/evaluate)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    return p


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_output_dir(args.out)
    model_path = resolve_model(args.model)
    scorer = load_scorer(model_path, max_length=args.max_length, max_query_length=args.max_query_length)
    table = evaluate_model(
        scorer,
        run_label(scorer),
        args.collection or ["dl19"],
        args.out,
        model=model_path,
        queries=args.queries,
        depth=args.depth,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        settings={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    )
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 120):
        print(aggregate(table).to_string(index=False))
    print(f"wrote {args.out / 'metrics.parquet'} and TREC runs in {args.out}")
    return 0


if __name__ == "__main__":
    main()
