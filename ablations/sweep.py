"""Sweep the grid interaction × layer (× head group): one ablation run per cell, resumable.

    python -m ablations.sweep [--interactions query2doc doc2query cls2query cls2doc] [--mode single|from|upto]
                              [--layer-units each | 0-1 2-3 ...] [--head-groups 0-5 6-11] [--base mice-step0]
                              [--model ...] [--collection ...] [--out results/ablations/sweep]

Rerun the same command to resume after an interruption. Library: :mod:`ablations.experiments.sweep`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ablations.cliargs import (
    add_common_args,
    experiment_from_args,
    load_model,
    progress_enabled,
    settings_from_args,
)
from ablations.masking.interactions import SWEEP_INTERACTIONS as DEFAULT_INTERACTIONS
from ablations.masking.interactions import SWEEP_MODES as MODES
from ablations.masking.interactions import valid_names
from ablations.masking.spec import base_spec, check_grid
from ablations.results import check_output_dir
from probe.errors import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ablations.sweep",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"interactions: {valid_names()}",
    )
    p.add_argument(
        "--interactions",
        nargs="+",
        default=list(DEFAULT_INTERACTIONS),
        help=f"interactions (or '+' groups) to sweep (default {' '.join(DEFAULT_INTERACTIONS)})",
    )
    p.add_argument(
        "--layer-units",
        nargs="+",
        default=["each"],
        help="'each' (every layer) or layer ranges, e.g. 0-1 2-3 4-5 (default each)",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="single",
        help="single: remove in that layer only; from: that layer to the last; upto: 0 to that layer",
    )
    p.add_argument(
        "--head-groups",
        nargs="+",
        default=[],
        help="head ranges swept separately, e.g. 0-5 6-11 (default: all heads together)",
    )
    p.add_argument(
        "--base",
        default=None,
        help="mask applied in every cell: an interaction/preset (all layers) or a JSON spec file",
    )
    add_common_args(p)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results/ablations/sweep"),
        help="sweep folder (default results/ablations/sweep); rerun the same command to resume",
    )
    p.add_argument(
        "--no-prefix-cache", action="store_true", help="run every cell from layer 0 (for comparison)"
    )
    p.add_argument("--no-progress", action="store_true")
    return p


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_output_dir(args.out)
    base = base_spec(args.base)
    check_grid(args.interactions, args.layer_units, args.head_groups)
    settings_from_args(args)  # every syntax checked: now the heavy part (torch, transformers)
    import pandas as pd

    from ablations.experiments.sweep import Sweep, SweepConfig, against_bm25_line, pivot

    config = SweepConfig(
        interactions=args.interactions,
        layer_units=args.layer_units,
        mode=args.mode,
        head_groups=args.head_groups,
        base=base,
    )
    ce, model_path = load_model(args)
    config.cells(ce.num_layers, ce.num_heads)  # range errors before the baseline is computed
    progress = progress_enabled(args)
    exp = experiment_from_args(args, ce, model_path, progress=progress)
    sweep = Sweep(exp, config, args.out, prefix=not args.no_prefix_cache, progress=progress)
    for notice in sweep.notices:
        print(notice, flush=True)
    already = len(sweep.cells) - len(sweep.pending())
    print(f"sweep: {len(sweep.cells)} cells ({already} already done) in {args.out}", flush=True)
    start = time.perf_counter()
    summary = sweep.run()
    d = exp.rs.describe()
    print(
        f"model {model_path}; {d['name']}: {d['queries']} queries, {d['candidates']} pairs; "
        f"{sweep.computed} cells computed in {time.perf_counter() - start:.1f} s"
    )
    measure = exp.measures[0]
    grid = pivot(summary, measure)
    with pd.option_context("display.float_format", "{:+.4f}".format, "display.width", 140):
        print(
            f"Δ {measure} vs the full model (baseline {summary['baseline_mean'].iloc[0]:.4f}); rows: "
            "interaction, columns: layers"
        )
        print(grid.to_string())
    sig = summary[(summary["measure"] == measure) & (summary["p"] < 0.05)]
    print(f"{len(sig)} of {len(sweep.cells)} cells differ significantly (paired t-test, p < 0.05)")
    line = against_bm25_line(summary, measure)
    if line:
        print(line)
    print(f"wrote {args.out / 'summary.parquet'} and {args.out / 'per_query.parquet'}")
    return 0


if __name__ == "__main__":
    main()
