"""Reproduce the MICE paper's table on the reference cross-encoder, in one command.

    python -m ablations.paper [--mice runs/mice12/model] [--maxsim runs/mice12/maxsim]
                              [--lite runs/mice12/lite] [--collections dl19 dl20 scifact]
                              [--queries N] [--threads 2] [--out results/paper]
    python -m reports.build --results results/paper --out results/paper/report.html

Rows: the cross-encoder; MICE steps 0-3 masked (no retraining); MICE-ℓK+3 masked (``mice-final``:
K = layers // 3, ℓ4+3 on the 12-layer reference); and, when given, the retrained MICE model and the
MaxSim / LITE baselines (``python -m ablations.retrain`` on ``<out>/mice.json``, written here). Columns:
nDCG@10 per collection with the paper's number in brackets and a paired t-test against the
cross-encoder, latency per query of 100 candidates (all rows interleaved), speed-up, storage, parameters.
Library: :mod:`ablations.experiments.paper`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ablations.experiments.compare import parse_variants
from ablations.experiments.paper import PaperConfig, format_paper, paper
from ablations.results import check_output_dir, manifest, write_table
from probe.errors import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.paper", description=__doc__.split("\n\n")[0])
    d = PaperConfig()
    p.add_argument("--reference", default=d.reference, help="the cross-encoder (default: the reference)")
    p.add_argument(
        "--config", default=d.config, help="MICE architecture: a preset or a mice.json (default mice-final)"
    )
    p.add_argument("--mice", default=None, help="retrained MICE folder (python -m ablations.retrain)")
    p.add_argument(
        "--mice-variant",
        action="append",
        default=None,
        metavar="LABEL=FOLDER",
        help="another retrained MICE model (another recipe), a row 'mice-retrained-LABEL'; repeatable",
    )
    p.add_argument(
        "--maxsim", default=None, help="MaxSim baseline folder (ablations.retrain --student maxsim)"
    )
    p.add_argument("--lite", default=None, help="LITE baseline folder (ablations.retrain --student lite)")
    p.add_argument("--collections", nargs="+", default=d.collections, help="default: dl19 dl20 scifact")
    p.add_argument(
        "--step-collections",
        nargs="+",
        default=None,
        help="collections the masked steps 0-3 are scored on (default: all of --collections); each step "
        "costs a full cross-encoder pass",
    )
    p.add_argument(
        "--queries", type=int, default=None, help="first N queries of each collection (default all)"
    )
    p.add_argument(
        "--ood-queries",
        type=int,
        default=None,
        help="first N queries of the out-of-domain collections (default: --queries; all)",
    )
    p.add_argument(
        "--depth", type=int, default=None, help="top-K BM25 candidates per query (default all: 100)"
    )
    p.add_argument("--latency-queries", type=int, default=d.latency_queries)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--bootstrap", type=int, default=d.bootstrap)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, default=d.out)
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    return p


@cli
def main(argv=None) -> int:
    fields = vars(build_parser().parse_args(argv))
    progress = not fields.pop("no_progress")
    fields["mice_variants"] = parse_variants(fields.pop("mice_variant"))
    cfg = PaperConfig(**fields, progress=progress)
    check_output_dir(cfg.out)
    per_q, summary, table, meta = paper(cfg)
    write_table(per_q, cfg.out, "per_query", manifest(**meta))
    write_table(summary, cfg.out, "comparison", manifest(**meta))
    write_table(table, cfg.out, "paper", manifest(**{**meta, "kind": "mice-paper"}))
    print(format_paper(table, meta["missing_rows"]))
    print(
        f"wrote {cfg.out / 'paper.parquet'}, comparison.parquet, per_query.parquet and mice.json in {cfg.out}"
    )
    print(f"report: python -m reports.build --results {cfg.out} --out {cfg.out / 'report.html'}")
    return 0


if __name__ == "__main__":
    main()
