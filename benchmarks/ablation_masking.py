"""Ablation cost: (a) masked ÷ plain forward on the same batch, (b) a sweep with ÷ without the prefix cache.

    python benchmarks/ablation_masking.py --model reference --collection dl19 --queries 10 --depth 100

(a) One batch of ``--batch-size`` pairs (the longest of the rerank set, so the batch is as large as it
    gets), tokenized once. Each repeat times the plain forward (the model's own fused attention) and the
    masked forward (:class:`ablations.masking.masked.MaskedCrossEncoder`: the mask expanded from the role
    table for this batch plus the toolkit's attention function), alternating which goes first; the median of
    each and their ratio are reported per mask (target ≤ 1.15×).
(b) The per-layer sweep grid of ``python -m ablations.sweep`` (its default interactions query2doc,
    doc2query, cls2query, cls2doc × every layer; ``--interactions all`` for the whole named vocabulary,
    12 interactions) on the rerank set, cells in the sweep's order (by first masked
    layer). Timed: scoring every cell (i) with the full masked forward of every batch, (ii) from the
    prefix-state cache (prefix layers computed once, then layers ℓ…L-1 in full), (iii) + the last layer
    computed for the CLS row only, (iv) + only the rows the mask changes recomputed in the first masked
    layer (iv is what ``ablations.sweep`` runs). Tokenization and the baseline are done before timing and
    shared; each arm starts from an empty cache, so its prefix cost is inside its time. Target ≤ 0.5×
    against (i). Scores of every arm are checked against (i).

Exits 0 (the ratios are measurements, not tests); ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a clone without installing the package
    sys.path.insert(0, str(REPO))

MASKS_A = {
    "doc2query (all layers)": [("doc2query", "all", "all")],
    "mice-step3 (2 distinct layer tables)": [("mice-step3", "all", "all")],
    "doc2query, heads 0-5 (per-head mask)": [("doc2query", "all", "0-5")],
}


def main(argv=None) -> int:
    from probe.errors import cli

    return cli(_main)(argv)


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _main(argv=None) -> int:
    import numpy as np
    import torch

    from ablations.data.collections import load_collection
    from ablations.experiments.runner import Experiment, Settings
    from ablations.experiments.sweep import SweepConfig
    from ablations.masking.interactions import NAMED, SWEEP_INTERACTIONS
    from ablations.masking.masked import MaskedCrossEncoder
    from ablations.masking.masks import MaskSpec, Rule, compile_mask
    from ablations.paths import resolve_model
    from ablations.results import atomic_write_text, environment, git_revision
    from probe.model import CrossEncoder

    p = argparse.ArgumentParser(
        prog="python benchmarks/ablation_masking.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model", default=None, help="cross-encoder (default: $MICE_MODEL or the reference)")
    p.add_argument("--collection", default="dl19", help="collection (default dl19, the in-domain test set)")
    p.add_argument("--queries", type=int, default=10, help="first N queries for the sweep (default 10)")
    p.add_argument("--depth", type=int, default=100, help="candidates per query (default 100)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7, help="timed repeats for (a) (default 7)")
    p.add_argument("--skip-sweep", action="store_true", help="only (a)")
    p.add_argument(
        "--interactions",
        nargs="+",
        default=None,
        help="interactions of the sweep grid (b) (default: the sweep's own, "
        f"{' '.join(SWEEP_INTERACTIONS)}; 'all': the named vocabulary, {len(NAMED)} interactions)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    interactions = list(SWEEP_INTERACTIONS) if args.interactions is None else args.interactions
    if interactions == ["all"]:
        interactions = list(NAMED)
    sweep = SweepConfig(interactions=interactions)  # a bad name is one line before the model loads

    model = resolve_model(args.model)
    ce = CrossEncoder.from_pretrained(model, max_length=args.max_length)
    rs = load_collection(args.collection).subset(args.queries, args.depth)
    print(
        f"{model}: {ce.num_layers} layers × {ce.num_heads} heads; torch threads {torch.get_num_threads()}",
        flush=True,
    )
    report: dict = {
        "model": model,
        "collection": rs.describe(),
        "git_revision": git_revision(),
        "environment": environment(),
        "threads": torch.get_num_threads(),
    }

    # ---------------------------------------------------------------- (a) masked ÷ plain forward
    batch = next(ce.batches(rs.pairs(), args.batch_size))
    print(
        f"(a) one batch: {len(batch)} pairs × {batch.input_ids.shape[1]} tokens; median of {args.repeats} "
        "repeats",
        flush=True,
    )
    report["a"] = {"batch": list(batch.input_ids.shape), "masks": {}}
    with torch.inference_mode():
        for label, rules in MASKS_A.items():
            masked = MaskedCrossEncoder(
                ce, compile_mask(MaskSpec([Rule(*r) for r in rules]), ce.num_layers, ce.num_heads)
            )
            ce.forward(batch), masked.forward(batch)  # warm-up
            plain_t, masked_t = [], []
            for r in range(args.repeats):
                first, second = (
                    ((plain_t, ce), (masked_t, masked)) if r % 2 == 0 else ((masked_t, masked), (plain_t, ce))
                )
                for times, scorer in (first, second):
                    times.append(_time(lambda s=scorer: s.forward(batch)))
            pm, mm = statistics.median(plain_t), statistics.median(masked_t)
            report["a"]["masks"][label] = {"plain_s": pm, "masked_s": mm, "ratio": mm / pm}
            print(
                f"    {label:40s} plain {pm * 1000:7.1f} ms  masked {mm * 1000:7.1f} ms  "
                f"ratio {mm / pm:.3f}×",
                flush=True,
            )

    if args.skip_sweep:
        _write(args.json, report, atomic_write_text)
        return 0

    # ------------------------------------------------------------- (b) sweep with ÷ without prefix cache
    exp = Experiment(ce, rs, Settings(collection=rs.name, batch_size=args.batch_size), model_label=model)
    exp.batches  # tokenize once, outside the timings  # noqa: B018
    cells, _ = sweep.cells(ce.num_layers, ce.num_heads)
    compiled = [exp.compile(c.spec) for c in cells]
    order = sorted(range(len(cells)), key=lambda i: (compiled[i].first_layer, i))
    print(
        f"(b) sweep: {len(cells)} cells ({len(interactions)} interactions × {ce.num_layers} layers) on "
        f"{rs.name}, "
        f"{len(exp.pairs)} pairs per cell",
        flush=True,
    )
    results = {}
    arms = (
        ("full masked forward", {"prefix": False}),
        ("prefix cache", {"prefix": True, "cls_only_last": False, "rows_shortcut": False}),
        ("prefix + CLS-only last layer", {"prefix": True, "cls_only_last": True, "rows_shortcut": False}),
        (
            "prefix + CLS-only + changed rows only",
            {"prefix": True, "cls_only_last": True, "rows_shortcut": True},
        ),
    )
    for arm, kwargs in arms:
        exp.close()  # a fresh cache: its prefix cost is inside the timing
        start = time.perf_counter()
        scores = [exp.scores(compiled[i], **kwargs) for i in order]
        results[arm] = (time.perf_counter() - start, scores)
        print(f"    {arm:40s} {results[arm][0]:8.1f} s", flush=True)
    base_t, base_scores = results["full masked forward"]
    report["b"] = {
        "cells": len(cells),
        "interactions": interactions,
        "pairs_per_cell": len(exp.pairs),
        "arms": {},
    }
    for arm, (t, scores) in results.items():
        err = max(float(np.abs(a - b).max()) for a, b in zip(scores, base_scores))
        report["b"]["arms"][arm] = {"seconds": t, "ratio": t / base_t, "max_abs_score_diff": err}
        print(f"    {arm:40s} ÷ full masked forward = {t / base_t:.3f}×  (max |Δscore| {err:.1e})")
    _write(args.json, report, atomic_write_text)
    return 0


def _write(path, report, writer) -> None:
    if path is not None:
        writer(path, json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
