"""Capture overhead: time to re-rank a collection with role-flow capture ÷ time without, in the same run.

    python benchmarks/probe_overhead.py --model reference --collection dl19 --queries 43 --depth 100

The pairs are tokenized into the same length-sorted batches once. Each batch is then run back to back in
every mode — plain (the model's own fused attention), inside ``probe.capture.capture(what=("flows",))``
over all layers and heads, and with flows + CLS rollout — the order rotating from batch to batch, so that
a change in machine load hits all modes alike. Reported: the ratio of total time with capture to total
time without (target ≤ 1.3× for per-role aggregates), by wall clock and by this process's CPU time (the
steadier of the two on a shared machine), and how far the captured scores are from the plain ones.
Exits 0 (the ratio is a measurement, not a test); ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a clone without installing the package
    sys.path.insert(0, str(REPO))


def run_batch(scorer, batch, what):
    """Scores of one batch: the plain model (``what`` None) or inside a fresh capture of ``what``."""
    import torch

    from probe.capture import capture

    if what is None:
        with torch.inference_mode():
            return scorer.forward(batch).float().cpu()
    with capture(scorer, what) as cap:
        return cap.forward(batch)


def main(argv=None) -> int:
    from probe.errors import cli

    return cli(_main)(argv)


def _main(argv=None) -> int:
    import torch

    from ablations.data.collections import load_collection
    from ablations.paths import resolve_model
    from ablations.results import atomic_write_text, environment, git_revision
    from probe.model import CrossEncoder

    p = argparse.ArgumentParser(
        prog="python benchmarks/probe_overhead.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model", default=None, help="cross-encoder (default: $MICE_MODEL or the reference)")
    p.add_argument("--collection", default="dl19", help="collection (default dl19, the in-domain test set)")
    p.add_argument("--queries", type=int, default=43, help="first N queries (default 43: all of dl19)")
    p.add_argument("--depth", type=int, default=100, help="BM25 candidates per query (default 100)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per batch (default 32)")
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="max tokens per pair (default: the model folder's own, else 256)",
    )
    p.add_argument("--repeats", type=int, default=3, help="passes over all batches (default 3)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)

    model = resolve_model(args.model)
    scorer = CrossEncoder.from_pretrained(model, max_length=args.max_length)
    rs = load_collection(args.collection).subset(args.queries, args.depth)
    batches = list(scorer.batches(rs.pairs(), args.batch_size))
    n_pairs = sum(len(b) for b in batches)
    print(
        f"{model} on {rs.name}: {n_pairs} pairs in {len(batches)} batches "
        f"(max_length {scorer.max_length}); torch threads {torch.get_num_threads()}; {args.repeats} repeats",
        flush=True,
    )
    modes = {"plain": None, "flows": ("flows",), "flows+rollout": ("flows", "rollout")}
    run_batch(scorer, batches[-1], ("flows",))  # warm-up
    wall = {m: [0.0] * args.repeats for m in modes}
    cpu = {m: [0.0] * args.repeats for m in modes}
    worst = {m: 0.0 for m in modes}
    names = list(modes)
    for r in range(args.repeats):
        for i, batch in enumerate(batches):
            # every batch runs in every mode back to back, the order rotating, so load drift cancels
            shift = (r * len(batches) + i) % len(names)
            outputs = {}
            for mode in names[shift:] + names[:shift]:
                w0, c0 = time.perf_counter(), time.process_time()
                outputs[mode] = run_batch(scorer, batch, modes[mode])
                wall[mode][r] += time.perf_counter() - w0
                cpu[mode][r] += time.process_time() - c0
            for mode in names[1:]:
                worst[mode] = max(worst[mode], float((outputs[mode] - outputs["plain"]).abs().max()))
        print(
            f"repeat {r}: wall "
            + ", ".join(f"{m} {wall[m][r]:.2f}s" for m in modes)
            + "; cpu "
            + ", ".join(f"{m} {cpu[m][r]:.2f}s" for m in modes),
            flush=True,
        )
    tot_w = {m: sum(v) for m, v in wall.items()}
    tot_c = {m: sum(v) for m, v in cpu.items()}
    result = {
        "model": model,
        "collection": rs.name,
        "pairs": n_pairs,
        "batches": len(batches),
        "batch_size": args.batch_size,
        "max_length": scorer.max_length,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "wall_s": wall,
        "cpu_s": cpu,
        "ratio_flows": tot_w["flows"] / tot_w["plain"],
        "ratio_flows_rollout": tot_w["flows+rollout"] / tot_w["plain"],
        "cpu_ratio_flows": tot_c["flows"] / tot_c["plain"],
        "cpu_ratio_flows_rollout": tot_c["flows+rollout"] / tot_c["plain"],
        "max_abs_score_diff": worst,
        "git_revision": git_revision(),
        "environment": environment(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": os.getloadavg(),
    }
    per_pass = tot_w["plain"] / args.repeats
    print(
        f"plain {per_pass:.2f}s per pass ({n_pairs / per_pass:.1f} pairs/s); max |score - plain|: "
        + ", ".join(f"{m} {worst[m]:.1e}" for m in names[1:])
    )
    print(
        f"capture overhead (wall): flows {result['ratio_flows']:.3f}x (target <= 1.3x), "
        f"flows+rollout {result['ratio_flows_rollout']:.3f}x"
    )
    print(
        f"capture overhead (process CPU time): flows {result['cpu_ratio_flows']:.3f}x, "
        f"flows+rollout {result['cpu_ratio_flows_rollout']:.3f}x; load average "
        + " ".join(f"{x:.1f}" for x in result["load_average"])
    )
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    main()
