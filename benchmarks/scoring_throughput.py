"""Re-rank 100 BM25 candidates for every query of the in-domain collection with MiniLM-L6 and compare
this project's scorer with sentence-transformers' ``CrossEncoder.predict``, measured in the same run.

    python benchmarks/scoring_throughput.py [--model reference] [--collection dl19] [--batch-size 32]

Prints pairs/second for both, their ratio (ours / sentence-transformers; target >= 1.0) and the max
absolute score difference (must be <= 1e-4).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sentence_transformers import CrossEncoder as STCrossEncoder

from ablations.data.collections import load_collection
from ablations.paths import resolve_model
from probe.errors import cli
from probe.model import CrossEncoder


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="reference")
    p.add_argument("--collection", default="dl19")
    p.add_argument("--queries", type=int, default=None, help="limit the number of queries (default: all)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=None, help="default: the model's own max length")
    args = p.parse_args(argv)

    path = resolve_model(args.model)
    rs = load_collection(args.collection).subset(args.queries, 100)
    pairs = rs.pairs()
    ours = CrossEncoder.from_pretrained(path, max_length=args.max_length)
    theirs = STCrossEncoder(path, max_length=ours.max_length, device=str(ours.device))
    identity = torch.nn.Identity()
    # warm-up both on a few pairs so one-time costs are not timed
    ours.score(pairs[:64], batch_size=args.batch_size)
    theirs.predict(pairs[:64], batch_size=args.batch_size, activation_fn=identity)

    s_ours, t_ours = timed(lambda: ours.score(pairs, batch_size=args.batch_size))
    s_st, t_st = timed(
        lambda: theirs.predict(
            pairs, batch_size=args.batch_size, activation_fn=identity, show_progress_bar=False
        )
    )
    diff = float(np.abs(s_ours - np.asarray(s_st)).max())
    print(
        f"model {path}\ncollection {rs.name}: {len(rs.queries)} queries, {len(pairs)} pairs, "
        f"batch {args.batch_size}, max_length {ours.max_length}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'scorer':<34}{'seconds':>9}{'pairs/s':>10}")
    print(f"{'mice-toolkit CrossEncoder.score':<34}{t_ours:>9.1f}{len(pairs) / t_ours:>10.1f}")
    print(f"{'sentence-transformers predict':<34}{t_st:>9.1f}{len(pairs) / t_st:>10.1f}")
    print(f"ratio (ours / sentence-transformers): {t_st / t_ours:.2f}x   max |score diff|: {diff:.2e}")
    return 0 if diff <= 1e-4 else 1


if __name__ == "__main__":
    main()
