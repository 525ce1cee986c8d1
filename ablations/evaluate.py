"""Re-rank collections with a model and evaluate it with ir_measures, beside BM25 (the quick-start job).

    python -m ablations.evaluate [--model M [--model M2 ...]] [--collection C ...] [--queries N]
                                 [--depth K] [--out DIR]

Prints BM25 and the model side by side; writes ``metrics.parquet`` (one row per run × query × measure) +
``metrics.json``, one TREC run per run, and ``stats.parquet`` (+ manifest): the model against BM25 (mean Δ,
paired t-test over queries, bootstrap CI, wins/ties/losses), its nDCG@10 line also printed. With several
``--model`` (say a trained student and its teacher), every model re-ranks the same candidates, each run is
named after its model, and ``stats.parquet`` holds every run against BM25 and against the first model.
Library: :mod:`ablations.evaluation`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ablations.cliargs import add_max_query_length
from ablations.evaluation.measures import aggregate
from ablations.evaluation.rerank import evaluate_models
from ablations.evaluation.stats import paired_table
from ablations.paths import resolve_model
from ablations.results import check_output_dir, manifest, write_table
from ablations.scorers import load_scorer, run_label
from probe.errors import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="cross-encoder folder, hub id, 'reference', a MICE configuration "
        "(mice.json or a retrained MICE folder) or a MaxSim/LITE folder from ablations.retrain "
        "(default: $MICE_MODEL or the reference cross-encoder); repeat it to compare models: each run is "
        "then named after its model and tested against BM25 and the first model",
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


def run_labels(names: list[str]) -> list[str]:
    """Run tags for several models: the name as given (``reference``) or a folder's last part, made unique."""
    out: list[str] = []
    for name in names:
        base = Path(name.rstrip("/")).name or name
        tag, n = base, 2
        while tag in out or tag == "bm25":
            tag, n = f"{base}-{n}", n + 1
        out.append(tag)
    return out


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_output_dir(args.out)
    names = args.model or [None]
    paths = [resolve_model(m) for m in names]  # every model found before any is loaded
    scorers = [
        load_scorer(p, max_length=args.max_length, max_query_length=args.max_query_length) for p in paths
    ]
    labels = [run_label(scorers[0])] if len(names) == 1 else run_labels([str(n) for n in names])
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    table = evaluate_models(
        dict(zip(labels, scorers)),
        args.collection or ["dl19"],
        args.out,
        models={tag: str(p) for tag, p in zip(labels, paths)},
        queries=args.queries,
        depth=args.depth,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        settings=settings,
    )
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 120):
        print(aggregate(table).to_string(index=False))
    # every run against BM25 and against the first model (with one model: against BM25 alone)
    stats = paired_table(table, ["bm25", labels[0]])
    meta = manifest(kind="evaluate-stats", models=dict(zip(labels, map(str, paths))), settings=settings)
    write_table(stats, args.out, "stats", meta)
    width = max(len(t) for t in labels)
    print("\nnDCG@10, paired t-test over queries (Δ = run − against):")
    for r in stats[stats["measure"] == "nDCG@10"].itertuples():
        print(
            f"  {r.collection:8s} {r.run:>{width}s} vs {r.against:<{width}s} Δ {r.delta:+.4f}  "
            f"95% CI [{r.ci_low:+.4f}, {r.ci_high:+.4f}]  p {r.p:.2g}  W/T/L {r.wins}/{r.ties}/{r.losses}"
        )
    print(f"wrote {args.out / 'metrics.parquet'}, stats.parquet and TREC runs in {args.out}")
    return 0


if __name__ == "__main__":
    main()
