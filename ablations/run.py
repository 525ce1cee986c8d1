"""Re-rank a collection with interactions removed and say, with statistics, what it cost.

    python -m ablations.run --remove doc2query --layers 0-6 [--heads ...] [--model ...]
                            [--collection ...] [--out ...]

Several ``--remove`` flags combine; ``--remove NAME:LAYERS[:HEADS]`` gives one rule its own layers/heads.
``--spec FILE`` reads a mask spec (JSON, see ablations.masking.masks). Results are appended to
``<out>/per_query.parquet`` and ``<out>/summary.parquet`` (default ``results/ablations``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ablations.cliargs import (
    add_common_args,
    experiment_from_args,
    load_model,
    progress_enabled,
    settings_from_args,
)
from ablations.masking.interactions import DEFAULT_MICE_K, MASK_PRESETS, preset_rules, valid_names
from ablations.masking.spec import MaskSpec, parse_rules, read_spec
from ablations.results import check_output_dir
from probe.errors import BadInput, cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ablations.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"interactions: {valid_names()}",
    )
    p.add_argument(
        "--remove",
        action="append",
        default=[],
        metavar="INTERACTION[:LAYERS[:HEADS]]",
        help="interaction to remove (repeatable), e.g. doc2query, query2doc+doc2query, *2sep, "
        "mice-step2; source = the attending token",
    )
    p.add_argument(
        "--layers",
        default="all",
        help="layers for every --remove without its own: 0-6, 0-2,5, all "
        "(0-based, inclusive; an end past the last layer is clamped)",
    )
    p.add_argument("--heads", default="all", help="heads for every --remove without its own (default all)")
    p.add_argument("--spec", type=Path, default=None, help="mask spec JSON file (combined with --remove)")
    add_common_args(p)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results/ablations"),
        help="results folder (default results/ablations)",
    )
    p.add_argument("--force", action="store_true", help="recompute a run already in the results table")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--list", action="store_true", help="print the interaction vocabulary and presets, then exit"
    )
    return p


def vocabulary() -> str:
    """The interaction names and what each preset removes (``--list``)."""
    lines = [
        f"interactions: {valid_names()}",
        "source = the attending token: doc2query = documents may not read the query (key side masked)",
        "presets:",
    ]
    for name in (*MASK_PRESETS[:-1], "mice-step3"):
        rules = preset_rules(name)
        lines.append(
            f"  {name:11s} "
            + "; ".join(f"{r.interaction}" + ("" if r.layers == "all" else f"[{r.layers}]") for r in rules)
        )
    lines.append(
        "  mice-step3@K: mice-step2 + query2doc[0-(K-1)]; mice-step3 = mice-step3@K with K = layers // 3 "
        f"(12 layers: K = 4, as the paper; 6 layers: K = {DEFAULT_MICE_K})"
    )
    return "\n".join(lines)


def spec_from_args(args: argparse.Namespace) -> MaskSpec:
    """``--spec`` + ``--remove`` flags as one MaskSpec (syntax checked; the model is not needed)."""
    base = read_spec(args.spec) if args.spec is not None else MaskSpec()
    return (base + MaskSpec(parse_rules(args.remove, args.layers, args.heads))).require_rules()


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        print(vocabulary())
        return 0
    check_output_dir(args.out)
    spec = spec_from_args(args)
    settings_from_args(args)  # bad numbers fail before anything is loaded
    # the mask and the numbers are checked: now the heavy part (torch, transformers)
    from ablations.experiments.runner import (
        add_bm25,
        format_summary,
        lacks_bm25,
        run_meta,
        stored_summary,
        write_results,
    )
    from ablations.masking.masks import compile_for

    ce, model_path = load_model(args)
    compiled = compile_for(ce, spec)
    for notice in compiled.notices:
        print(notice, flush=True)
    if compiled.is_empty:
        raise BadInput(f"empty mask: {spec.label!r} removes nothing in this model's {ce.num_layers} layers")
    progress = progress_enabled(args)
    exp = experiment_from_args(args, ce, model_path, progress=progress, prefix=False)
    run_id = exp.run_id(spec, compiled)
    d = exp.rs.describe()
    kind = f"; {exp.ce.describe()}" if exp.ce.signature else ""
    head = [
        f"model      {model_path}  (fingerprint {exp.fingerprint}{kind})",
        f"collection {d['name']}: {d['queries']} queries, {d['candidates']} pairs (depth {exp.depth})",
        f"mask       {compiled.describe()}",
        f"baseline   {'cached' if exp.baseline_cached else 'computed'} (unablated model)",
    ]
    stored = None if args.force else stored_summary(args.out, run_id)
    if stored is not None:
        print("\n".join(head))
        if lacks_bm25(stored):  # stored before the BM25 columns existed: add them, rescoring nothing
            filled = add_bm25(args.out, run_id, exp)
            if filled is not None:
                stored = filled
                print(f"added the columns against BM25 to this run in {args.out} (from its per-query rows)")
        print(
            format_summary(
                stored, title=f"run {run_id} (already in {args.out}/summary.parquet; --force recomputes)"
            )
        )
        return 0
    start = time.perf_counter()
    result = exp.run(spec, compiled=compiled)
    meta = run_meta(exp, "ablation-run", command="python -m ablations.run " + " ".join(argv or sys.argv[1:]))
    write_results([result], args.out, meta)
    pairs_per_s = len(exp.pairs) / max(result.seconds, 1e-9)
    print("\n".join(head))
    print(
        format_summary(
            result.summary,
            title=f"run {run_id}: {time.perf_counter() - start:.1f} s ({pairs_per_s:.0f} pairs/s)",
        )
    )
    print(f"wrote {args.out / 'per_query.parquet'} and {args.out / 'summary.parquet'}")
    return 0


if __name__ == "__main__":
    main()
