"""Compare the cross-encoder, the masked (not retrained) MICE model, the retrained MICE model and the
late-interaction baselines on the same rerank sets: effectiveness in and out of domain, latency, storage.

    python -m ablations.compare --config mice.json --mice runs/mice --maxsim runs/maxsim --lite runs/lite \\
        [--reference reference] [--collections dl19 scifact] [--queries N] [--ood-queries 50] \\
        [--latency-queries 5] [--batch-size 100] [--out results/mice]

Writes ``comparison.parquet`` and ``per_query.parquet`` (+ manifests) in ``--out``; resumable.
Library: :mod:`ablations.experiments.compare`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ablations.experiments.compare import CompareConfig, compare, format_table, parse_variants
from ablations.results import check_output_dir, manifest, write_table
from probe.errors import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.compare", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--reference", default="reference", help="the cross-encoder (default: the reference model)"
    )
    p.add_argument(
        "--config",
        default=None,
        help="MICE configuration file or preset (mice-final, mice-l4+3, ...): evaluated on the reference's "
        "weights, not retrained (the 'mice-masked' row)",
    )
    p.add_argument(
        "--masks",
        nargs="+",
        default=None,
        help="mask presets or interactions: the reference under each, one row each (mice-step0 ...)",
    )
    p.add_argument("--mice", default=None, help="retrained MICE model folder (python -m ablations.retrain)")
    p.add_argument(
        "--mice-variant",
        action="append",
        default=None,
        metavar="LABEL=FOLDER",
        help="another retrained MICE model (another recipe), a row 'mice-retrained-LABEL'; repeatable",
    )
    p.add_argument("--maxsim", default=None, help="trained MaxSim baseline folder")
    p.add_argument("--lite", default=None, help="trained LITE baseline folder")
    p.add_argument(
        "--bm25",
        dest="first_stage",
        action="store_true",
        help="add a row for the first stage itself (the candidates' BM25 order; no latency measured)",
    )
    p.add_argument(
        "--collections",
        nargs="+",
        default=None,
        help="collections (default: dl19 in-domain + every BEIR collection available)",
    )
    p.add_argument("--queries", type=int, default=None, help="first N queries of each collection")
    p.add_argument(
        "--ood-queries", type=int, default=None, help="first N queries of out-of-domain collections"
    )
    p.add_argument("--depth", type=int, default=None, help="top-K candidates per query (default all: 100)")
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="cross-encoder pair budget (default: the model's own, e.g. 128 for the reference)",
    )
    p.add_argument("--batch-size", type=int, default=100, help="pairs per call when evaluating (default 100)")
    p.add_argument("--latency-queries", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--bootstrap", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/mice"))
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    return p


@cli
def main(argv=None) -> int:
    fields = vars(build_parser().parse_args(argv))
    progress = not fields.pop("no_progress")
    fields["mice_variants"] = parse_variants(fields.pop("mice_variant"))
    cfg = CompareConfig(**fields, progress=progress)
    check_output_dir(cfg.out)
    per_q, summary, meta = compare(cfg)
    write_table(per_q, cfg.out, "per_query", manifest(**meta))
    write_table(summary, cfg.out, "comparison", manifest(**meta))
    print(format_table(summary))
    print(f"wrote {cfg.out / 'comparison.parquet'} and {cfg.out / 'per_query.parquet'}")
    return 0


if __name__ == "__main__":
    main()
