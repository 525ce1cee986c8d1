"""Capture overhead: time to re-rank a collection with role-flow capture ÷ time without, in the same run.

    python benchmarks/probe_overhead.py --model reference --collection dl19 --queries 43 --depth 100

The pairs are tokenized into the same length-sorted batches once; then each repeat times one plain pass
(the model's own fused attention) and one pass inside ``probe.capture.capture(what=("flows",))`` over all
layers and heads, alternating which goes first. Reported: median seconds of each and their ratio (target
≤ 1.3× for per-role aggregates), plus the same for flows + CLS rollout. The captured scores are checked
against the plain ones. Exits 0 (the ratio is a measurement, not a test); ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a clone without installing the package
    sys.path.insert(0, str(REPO))


def plain_pass(scorer, batches):
    import torch

    with torch.inference_mode():
        return torch.cat([scorer.forward(b).float().cpu() for b in batches])


def capture_pass(scorer, batches, what):
    import torch

    from probe.capture import capture

    with capture(scorer, what) as cap:
        return torch.cat([cap.forward(b) for b in batches])


def main(argv=None) -> int:
    from probe.errors import cli

    return cli(_main)(argv)


def _main(argv=None) -> int:
    import torch

    from ablations.collections import load_collection
    from ablations.paths import resolve_model
    from ablations.results import atomic_write_text, environment, git_revision
    from probe.model import CrossEncoder

    p = argparse.ArgumentParser(prog="python benchmarks/probe_overhead.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="cross-encoder (default: $MICE_MODEL or the reference)")
    p.add_argument("--collection", default="dl19", help="collection (default dl19, the in-domain test set)")
    p.add_argument("--queries", type=int, default=43, help="first N queries (default 43: all of dl19)")
    p.add_argument("--depth", type=int, default=100, help="BM25 candidates per query (default 100)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each mode (default 3)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)

    model = resolve_model(args.model)
    scorer = CrossEncoder.from_pretrained(model, max_length=args.max_length)
    rs = load_collection(args.collection).subset(args.queries, args.depth)
    batches = list(scorer.batches(rs.pairs(), args.batch_size))
    n_pairs = sum(len(b) for b in batches)
    print(f"{model} on {rs.name}: {n_pairs} pairs in {len(batches)} batches; torch threads "
          f"{torch.get_num_threads()}; {args.repeats} repeats", flush=True)
    modes = {"plain": None, "flows": ("flows",), "flows+rollout": ("flows", "rollout")}
    plain_pass(scorer, batches[:1])  # warm-up
    times = {m: [] for m in modes}
    reference = None
    for r in range(args.repeats):
        order = list(modes) if r % 2 == 0 else list(reversed(modes))
        for mode in order:
            what = modes[mode]
            start = time.perf_counter()
            scores = plain_pass(scorer, batches) if what is None else capture_pass(scorer, batches, what)
            sec = time.perf_counter() - start
            times[mode].append(sec)
            if reference is None and what is None:
                reference = scores
            elif reference is not None and what is not None:
                diff = float((scores - reference).abs().max())
                if diff > 1e-4:
                    print(f"warning: {mode} scores differ from plain by {diff:.2e}", file=sys.stderr)
        print(f"repeat {r}: " + ", ".join(f"{m} {times[m][-1]:.2f}s" for m in modes), flush=True)
    med = {m: statistics.median(t) for m, t in times.items()}
    result = {
        "model": model, "collection": rs.name, "pairs": n_pairs, "batch_size": args.batch_size,
        "repeats": args.repeats, "threads": torch.get_num_threads(), "seconds": times, "median_s": med,
        "ratio_flows": med["flows"] / med["plain"], "ratio_flows_rollout": med["flows+rollout"] / med["plain"],
        "git_revision": git_revision(), "environment": environment(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    print(f"plain {med['plain']:.2f}s ({n_pairs / med['plain']:.1f} pairs/s); flows {med['flows']:.2f}s; "
          f"flows+rollout {med['flows+rollout']:.2f}s (medians)")
    print(f"capture overhead: flows {result['ratio_flows']:.3f}x (target <= 1.3x), "
          f"flows+rollout {result['ratio_flows_rollout']:.3f}x")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    main()
