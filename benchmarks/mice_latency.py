"""Per-query latency of re-ranking 100 candidates: the MICE plan with cached document states against the full
cross-encoder and the masked full forward, plus the MaxSim / LITE baselines, measured in one run.

    python benchmarks/mice_latency.py [--model reference] [--config mice.json | --preset mice-final]
                                      [--mice DIR] [--maxsim DIR] [--lite DIR] [--collection dl19]
                                      [--queries 10] [--threads 2]

Arms (each query's 100 candidates scored in one ``score(pairs, batch_size=100)`` call, arms interleaved
query by query so load changes hit every arm alike, one warm-up query first):

- ``cross-encoder``        the full model (``probe.model.CrossEncoder``);
- ``masked full forward``  the same weights with the MICE mask (``ablations.masking.masked``; all layers):
  what an
                           ablation computes — as much work as the full model;
- ``MICE split``           the MICE configuration's ``split`` plan, documents computed per query (no index);
- ``MICE doc-cache``       the MICE plan with document states read from an index built before timing;
- ``MaxSim`` / ``LITE``    late interaction with document embeddings from an index (trained folders if given,
                           else fresh heads on the same backbone: same latency, meaningless nDCG).

Prints median / mean ms per query, the speed-up against the cross-encoder (ratio of medians, checked against
``--target``: by default ≥ 20×, this project's target for the 12-layer reference on 2 CPU cores; the MICE
paper measured 4.2× on a GPU), the nDCG@10 of each arm on the benchmarked queries, index build time and size.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ablations.data.collections import RerankSet, load_collection
from ablations.evaluation.measures import aggregate, evaluate_runs
from ablations.experiments.compare import query_pairs
from ablations.masking.masked import MaskedCrossEncoder
from ablations.mice.config import MiceConfig, preset
from ablations.mice.late_interaction import LateInteractionScorer
from ablations.mice.model import MiceModel
from ablations.paths import resolve_model
from probe.errors import cli
from probe.model import CrossEncoder


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="reference", help="the cross-encoder (default: the reference model)")
    p.add_argument("--config", default=None, help="MICE configuration (default: --preset on --model)")
    p.add_argument(
        "--preset", default="mice-final", help="MICE preset when no --config (default: mice-final)"
    )
    p.add_argument(
        "--mice", default=None, help="retrained MICE folder (default: the config on the model's weights)"
    )
    p.add_argument("--maxsim", default=None)
    p.add_argument("--lite", default=None)
    p.add_argument("--collection", default="dl19")
    p.add_argument("--queries", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-baselines", action="store_true", help="skip MaxSim / LITE")
    p.add_argument(
        "--target",
        type=float,
        default=20.0,
        help="speed-up of MICE doc-cache over the cross-encoder to check (default 20: the 12-layer reference "
        "on 2 CPU cores; the paper's GPU figure is 4.2)",
    )
    args = p.parse_args(argv)
    if not args.target > 0:
        p.error(f"--target {args.target:g}: expected a speed-up above 0")
    torch.set_num_threads(args.threads)

    path = resolve_model(args.model)
    ce = CrossEncoder.from_pretrained(path)
    cfg = (
        MiceConfig.load(args.config)
        if args.config
        else preset(args.preset, ce.num_layers, ce.num_heads, path, max_length=ce.max_length)
    )
    mice = MiceModel.load(args.mice) if args.mice else MiceModel(ce, cfg)
    split = MiceModel(mice.ce, mice.config, plan="split") if "split" in mice.plan.valid else None
    rs = load_collection(args.collection).subset(args.queries + 1, 100)  # +1: the warm-up query
    qids = rs.query_ids
    warm, timed_q = qids[0], qids[1:]
    docs = list(dict.fromkeys(rs.docs[d] for d in rs.candidates["doc_id"]))

    arms = {"cross-encoder": ce, "masked full forward": MaskedCrossEncoder(ce, mice.config.mask)}
    if split is not None:
        arms["MICE split"] = split
    arms["MICE doc-cache"] = mice
    if not args.no_baselines:
        for kind, folder in (("maxsim", args.maxsim), ("lite", args.lite)):
            arms["MaxSim" if kind == "maxsim" else "LITE"] = (
                LateInteractionScorer.load(folder)
                if folder
                else LateInteractionScorer.from_cross_encoder(
                    ce, kind, max_doc_length=mice.config.max_doc_length
                )
            )
    builds = {}
    with tempfile.TemporaryDirectory(prefix="mice-bench-") as tmp:
        for name, scorer in arms.items():
            if hasattr(scorer, "build_index") and (
                not isinstance(scorer, MiceModel) or scorer.plan.shape == "doc-cache"
            ):
                start = time.perf_counter()
                index = scorer.build_index(docs, Path(tmp) / f"{name}.safetensors")
                builds[name] = (time.perf_counter() - start, index)
        times = {name: [] for name in arms}
        scores = {name: np.zeros(len(rs.candidates), dtype=np.float32) for name in arms}
        for name, scorer in arms.items():
            scorer.score(query_pairs(rs, warm), batch_size=100)
        for qid in timed_q:
            rows = np.flatnonzero(rs.candidates["query_id"].to_numpy() == qid)
            pairs = query_pairs(rs, qid)
            for name, scorer in arms.items():
                start = time.perf_counter()
                s = scorer.score(pairs, batch_size=100)
                times[name].append((time.perf_counter() - start) * 1000)
                scores[name][rows] = s
    keep = rs.candidates["query_id"].isin(timed_q).to_numpy()
    timed_rs = RerankSet(
        rs.name,
        {q: rs.queries[q] for q in timed_q},
        rs.docs,
        rs.candidates[keep].reset_index(drop=True),
        rs.qrels[rs.qrels["query_id"].isin(timed_q)],
        rs.measures,
        rs.source,
    )
    runs = {name: timed_rs.run_from_scores(s[keep]) for name, s in scores.items()}
    ndcg = aggregate(evaluate_runs(runs, timed_rs)).set_index("run")["nDCG@10"]

    print(f"model {path}; MICE {mice.describe()}")
    print(
        f"collection {rs.name}: {len(timed_q)} timed queries × 100 candidates (+1 warm-up), "
        f"one score() call per query, torch threads {torch.get_num_threads()}"
    )
    print(f"{'arm':22s}{'median ms':>11s}{'mean ms':>9s}{'speed-up':>10s}{'nDCG@10':>9s}  notes")
    base = statistics.median(times["cross-encoder"])
    for name in arms:
        med, mean = statistics.median(times[name]), statistics.fmean(times[name])
        note = ""
        if name in builds:
            sec, index = builds[name]
            note = (
                f"index {index.bytes_per_doc / 1024:.1f} KiB/doc, built {1000 * sec / len(index):.0f} ms/doc"
            )
        if name in ("MaxSim", "LITE") and not getattr(args, name.lower()):
            note += " (untrained head: nDCG meaningless)"
        if name.startswith("MICE") and not args.mice:
            note += " (not retrained)"
        print(f"{name:22s}{med:11.0f}{mean:9.0f}{base / med:9.2f}x{ndcg[name]:9.4f}  {note}")
    ratio = base / statistics.median(times["MICE doc-cache"])
    verdict = "target met" if ratio >= args.target else "target NOT met"
    print(
        f"MICE doc-cache vs cross-encoder: {ratio:.2f}x faster "
        f"(target >= {args.target:g}x: {verdict}; the paper: 4.2x on a GPU)"
    )
    return 0


if __name__ == "__main__":
    main()
