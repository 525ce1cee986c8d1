"""Greedy search for the minimal interaction set: remove as much as possible while nDCG stays within
tolerance.

    python -m ablations.search [--interactions query2doc doc2query cls2query cls2doc] [--layer-units each]
                               [--tolerance 0.01] [--alpha 0.05] [--strategy ordered|best] [--out DIR]

Writes ``search.json`` and ``steps.parquet`` in ``--out``. Library: :mod:`ablations.experiments.search`.
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
from ablations.masking.interactions import SEARCH_STRATEGIES as STRATEGIES
from ablations.masking.interactions import SWEEP_INTERACTIONS as DEFAULT_INTERACTIONS
from ablations.masking.interactions import valid_names
from ablations.masking.spec import base_spec, check_grid
from ablations.results import check_output_dir
from probe.errors import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ablations.search",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"interactions: {valid_names()}",
    )
    p.add_argument("--interactions", nargs="+", default=list(DEFAULT_INTERACTIONS))
    p.add_argument("--layer-units", nargs="+", default=["each"], help="'each' or layer ranges (default each)")
    p.add_argument(
        "--tolerance", type=float, default=0.01, help="largest accepted drop (absolute, default 0.01)"
    )
    p.add_argument("--alpha", type=float, default=None, help="also require p >= alpha (paired t-test)")
    p.add_argument("--measure", default="nDCG@10")
    p.add_argument("--strategy", choices=STRATEGIES, default="ordered")
    p.add_argument(
        "--base", default=None, help="mask always applied: an interaction/preset or a JSON spec file"
    )
    add_common_args(p)
    p.add_argument("--out", type=Path, default=Path("results/ablations/search"))
    p.add_argument("--no-progress", action="store_true")
    return p


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_output_dir(args.out)
    base = base_spec(args.base)
    check_grid(args.interactions, args.layer_units, [])
    settings_from_args(args)  # every syntax checked: now the heavy part (torch, transformers)
    from ablations.experiments.search import Search, SearchConfig, merge_units
    from ablations.experiments.sweep import SweepConfig

    config = SearchConfig(
        args.interactions,
        args.layer_units,
        args.tolerance,
        args.alpha,
        args.measure,
        args.strategy,
        base,
    )
    ce, model_path = load_model(args)
    SweepConfig(config.interactions, config.layer_units).cells(ce.num_layers, ce.num_heads)
    progress = progress_enabled(args)
    exp = experiment_from_args(args, ce, model_path, progress=progress)
    search = Search(exp, config, args.out, progress=progress)
    for notice in search.notices:
        print(notice, flush=True)
    start = time.perf_counter()
    removed, surviving = search.run()
    spec = search.spec_for(removed)
    print(
        f"search ({config.strategy}, {config.measure} drop ≤ {config.tolerance}"
        f"{'' if config.alpha is None else f', p ≥ {config.alpha}'}): {len(search.steps)} steps, "
        f"{search.distinct_masks} distinct masks ({search.evaluations} computed now, the rest reused) in "
        f"{time.perf_counter() - start:.1f} s; {len(removed)} of {len(search.units)} units removed"
    )
    if removed:
        final = search.evaluate(removed)
        print(f"removed: {spec.label}")
        print(
            f"  {config.measure} {final['baseline_mean']:.4f} → {final['mean']:.4f} ({final['delta']:+.4f}, "
            f"95% CI [{final['ci_low']:+.4f}, {final['ci_high']:+.4f}], p={final['p']:.3g})"
        )
    print(f"surviving: {merge_units(surviving).label}")
    print(f"removed-set spec: {spec.to_json()}")
    print(f"wrote {args.out / 'search.json'} and {args.out / 'steps.parquet'}")
    return 0


if __name__ == "__main__":
    main()
