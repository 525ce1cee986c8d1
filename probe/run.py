"""Probe a cross-encoder on a real query set: who attends to whom, in which layer, and what the score uses.

    python -m probe.run --model reference --collection dl19 --queries 20 --depth 10 --out results/probe

re-ranks the top ``--depth`` BM25 candidates of the first ``--queries`` queries while capturing, per layer
and head, the role→role attention flows (``probe.flows``) and the CLS attention rollout (``probe.rollout``);
on a few pairs it also computes attention flow (max-flow) and Integrated Gradients (``probe.attributions``).
It writes, each as parquet with a JSON manifest (model, collection, git revision, seed, settings):

=======================  =================================================================================
flows                    collection, query_id, doc_id, layer, head, source, target, value
flows_per_query          collection, query_id, layer, head, source, target, value (mean over the query's
                         pairs), pairs
flows_summary            collection, layer, head, source, target, mean, std, count (over pairs), query_mean,
                         query_std, queries (over per-query means)
rollout                  collection, query_id, doc_id, layer, method (rollout|flow), role, value
attributions             collection, query_id, doc_id, role, attribution, abs_share, tokens, score,
                         baseline_score, delta
attribution_tokens       collection, query_id, doc_id, position, token, role, attribution
scores                   collection, query_id, doc_id, rank (BM25), score (the model's)
=======================  =================================================================================
"""

from __future__ import annotations

import argparse

from ablations.cliargs import add_max_query_length

from .errors import cli
from .options import BACKENDS, DEFAULT_MAX_LENGTH, IG_LAYERS, ProbeConfig


def build_parser() -> argparse.ArgumentParser:
    d = ProbeConfig()
    p = argparse.ArgumentParser(
        prog="python -m probe.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Tables written to --out:\n" + __doc__.split("It writes, ")[1].split(":\n", 1)[1],
    )
    p.add_argument(
        "--model",
        default=None,
        help="cross-encoder folder, hub id, or a name: reference, "
        "minilm-l6-ce-dl19 (default: $MICE_MODEL or the reference cross-encoder)",
    )
    p.add_argument(
        "--collection", default=d.collection, help=f"collection name or BEIR folder (default {d.collection})"
    )
    p.add_argument(
        "--queries", type=int, default=d.queries, help=f"probe the first N queries (default {d.queries})"
    )
    p.add_argument(
        "--depth",
        type=int,
        default=d.depth,
        help=f"candidates per query: the top-K BM25 documents (default {d.depth})",
    )
    p.add_argument(
        "--layers",
        default=d.layers,
        help="layers whose flows are captured, 0-based inclusive "
        "ranges such as 0-2,5 (default all); rollout always uses every layer",
    )
    p.add_argument("--heads", default=d.heads, help="heads whose flows are captured, e.g. 0-3 (default all)")
    p.add_argument(
        "--backend",
        default=d.backend,
        choices=BACKENDS,
        help="how attention is captured: hf = hooks on the Hugging Face model (fast, default); "
        "transformer_lens = TransformerLens' TransformerBridge over the encoder (slower, a cross-check)",
    )
    p.add_argument(
        "--no-rollout", dest="rollout", action="store_false", help="skip the CLS attention rollout"
    )
    p.add_argument(
        "--flow-pairs",
        type=int,
        default=d.flow_pairs,
        help=f"pairs (spread over queries) for attention flow by max-flow, the slow part; 0 skips it "
        f"(default {d.flow_pairs})",
    )
    p.add_argument(
        "--no-attributions", dest="attributions", action="store_false", help="skip Integrated Gradients"
    )
    p.add_argument(
        "--attribution-pairs",
        type=int,
        default=d.attribution_pairs,
        help=f"pairs (spread over queries) for Integrated Gradients (default {d.attribution_pairs})",
    )
    p.add_argument(
        "--ig-steps",
        type=int,
        default=d.ig_steps,
        help=f"Integrated Gradients interpolation steps (default {d.ig_steps})",
    )
    p.add_argument(
        "--ig-layer",
        default=d.ig_layer,
        choices=IG_LAYERS,
        help=f"embedding layer attributed (default {d.ig_layer})",
    )
    p.add_argument(
        "--batch-size", type=int, default=d.batch_size, help=f"pairs per batch (default {d.batch_size})"
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=d.max_length,
        help=f"max tokens per pair (default: the model folder's max_seq_length, else {DEFAULT_MAX_LENGTH})",
    )
    add_max_query_length(p)
    p.add_argument(
        "--seed", type=int, default=d.seed, help=f"torch seed, recorded in the manifest (default {d.seed})"
    )
    p.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    return p


@cli
def main(argv=None) -> int:
    fields = vars(build_parser().parse_args(argv))
    progress = not fields.pop("no_progress")
    cfg = ProbeConfig(**fields, progress=progress)
    cfg.validate()  # syntax and choices, before seconds of torch / transformers imports
    import pandas as pd
    from transformers.utils import logging as hf_logging

    from ablations.experiments.probe import probe
    from ablations.results import check_output_dir

    from .summary import summary

    check_output_dir(cfg.out)
    hf_logging.disable_progress_bar()  # stderr keeps to our own progress and, on bad input, one line
    tables = probe(cfg)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 140):
        print(summary(tables).to_string(index=False))
        if "attributions" in tables:
            a = tables["attributions"]
            print(
                "Integrated Gradients |attribution| share per role (mean over pairs): "
                + ", ".join(
                    f"{r}={v:.3f}" for r, v in a.groupby("role", sort=False)["abs_share"].mean().items()
                )
                + f"; max |delta| {a['delta'].abs().max():.2e}"
            )
    print(f"wrote {', '.join(f'{k}.parquet' for k in tables)} to {cfg.out}")
    return 0


if __name__ == "__main__":
    main()
