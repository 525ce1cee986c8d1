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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ablations.data.collections import RerankSet, load_collection
from ablations.scorers import load_cross_encoder
from ablations.paths import resolve_model
from ablations.results import manifest, write_table

from .attributions import LAYERS as IG_LAYERS
from .attributions import integrated_gradients, role_summary
from .capture import BACKENDS, capture, flow_name, parse_indices, rollout_name, run_with_cache
from .errors import BadInput, cli
from .flows import aggregate_flows, flow_table, per_query_flows
from .model import DEFAULT_MAX_LENGTH, CrossEncoder
from .rollout import cls_role_shares, shares_table


@dataclass
class ProbeConfig:
    """Everything one probe run depends on (recorded in every manifest as ``settings``)."""

    model: str | None = None
    collection: str = "dl19"
    queries: int = 20
    depth: int = 10
    layers: str = "all"
    heads: str = "all"
    backend: str = "hf"
    rollout: bool = True
    flow_pairs: int = 3
    attributions: bool = True
    attribution_pairs: int = 10
    ig_steps: int = 32
    ig_layer: str = "embeddings"
    batch_size: int = 16
    max_length: int | None = None  # None: the model folder's own (sentence_bert_config), else 256
    seed: int = 0
    out: str = "results/probe"

    def validate(self) -> None:
        for name in ("queries", "depth", "batch_size", "ig_steps"):
            if getattr(self, name) < 1:
                raise BadInput(f"--{name.replace('_', '-')} {getattr(self, name)} must be >= 1")
        for name in ("flow_pairs", "attribution_pairs"):
            if getattr(self, name) < 0:
                raise BadInput(f"--{name.replace('_', '-')} {getattr(self, name)} must be >= 0")
        if self.ig_layer not in IG_LAYERS:
            raise BadInput(f"--ig-layer {self.ig_layer!r} is unknown; expected one of {', '.join(IG_LAYERS)}")


def spread_pairs(rs: RerankSet, n: int) -> list[int]:
    """Indices of ``n`` candidate rows spread over queries: every query's rank-1 candidate, then rank 2, ..."""
    cand = rs.candidates.reset_index(drop=True)
    order = {q: i for i, q in enumerate(rs.query_ids)}
    keys = pd.DataFrame({"rank": cand["rank"], "q": cand["query_id"].map(order)})
    return keys.sort_values(["rank", "q"], kind="stable").index[:n].tolist()


def probe(cfg: ProbeConfig, scorer: CrossEncoder | None = None) -> dict[str, pd.DataFrame]:
    """Run the probe of ``cfg`` and write its tables to ``cfg.out``; returns the tables."""
    cfg.validate()
    torch.manual_seed(cfg.seed)
    model_path = cfg.model if scorer is not None else resolve_model(cfg.model)
    scorer = scorer or load_cross_encoder(model_path, max_length=cfg.max_length)  # a MICE model: its masked plan
    layers = parse_indices(cfg.layers, scorer.num_layers, "layer")
    heads = parse_indices(cfg.heads, scorer.num_heads, "head")
    rs = load_collection(cfg.collection).subset(cfg.queries, cfg.depth)
    pairs = rs.pairs()
    qids, dids = rs.candidates["query_id"].tolist(), rs.candidates["doc_id"].tolist()
    timings: dict[str, float] = {}
    tables: dict[str, pd.DataFrame] = {}

    start = time.perf_counter()
    what = ("flows", "rollout") if cfg.rollout else ("flows",)
    with capture(scorer, what, layers=layers, heads=heads, backend=cfg.backend) as cap:
        scores = cap.score(pairs, batch_size=cfg.batch_size, progress=True)
    cache = cap.cache
    timings["capture_s"] = round(time.perf_counter() - start, 2)
    tables["scores"] = rs.candidates[["query_id", "doc_id", "rank"]].assign(score=scores.astype(float))
    tables["flows"] = flow_table({la: cache[flow_name(la)] for la in layers}, query_ids=qids, doc_ids=dids,
                                 heads=heads, collection=rs.name)
    tables["flows_per_query"] = per_query_flows(tables["flows"])
    tables["flows_summary"] = aggregate_flows(tables["flows"])

    shares = {}
    if cfg.rollout:
        shares["rollout"] = np.stack([cache[rollout_name(la)].numpy() for la in range(scorer.num_layers)], axis=1)
    rollout_tables = [shares_table(shares, query_ids=qids, doc_ids=dids, collection=rs.name)] if shares else []
    if cfg.flow_pairs:
        start = time.perf_counter()
        sel = spread_pairs(rs, cfg.flow_pairs)
        _, pat = run_with_cache(scorer, [pairs[i] for i in sel], ("pattern",), batch_size=cfg.batch_size,
                                backend=cfg.backend)
        flow = np.stack([
            cls_role_shares([pat[f"blocks.{la}.attn.hook_pattern"][k] for la in range(scorer.num_layers)],
                            pat.roles[k], flow=True)["flow"]
            for k in range(len(sel))])
        rollout_tables.append(shares_table({"flow": flow}, query_ids=[qids[i] for i in sel],
                                           doc_ids=[dids[i] for i in sel], collection=rs.name))
        timings["attention_flow_s"] = round(time.perf_counter() - start, 2)
    if rollout_tables:
        tables["rollout"] = pd.concat(rollout_tables, ignore_index=True)

    if cfg.attributions and cfg.attribution_pairs:
        start = time.perf_counter()
        sel = spread_pairs(rs, cfg.attribution_pairs)
        tokens, info = integrated_gradients(scorer, [pairs[i] for i in sel], n_steps=cfg.ig_steps,
                                            layer=cfg.ig_layer)
        ids = pd.DataFrame({"pair": range(len(sel)), "collection": rs.name,
                            "query_id": [qids[i] for i in sel], "doc_id": [dids[i] for i in sel]})
        summary = ids.merge(role_summary(tokens, info), on="pair").drop(columns="pair")
        tables["attributions"] = summary
        tables["attribution_tokens"] = ids.merge(tokens, on="pair").drop(columns="pair")
        timings["attributions_s"] = round(time.perf_counter() - start, 2)

    tables["scores"].insert(0, "collection", rs.name)
    settings = asdict(cfg) | {"layers": layers, "heads": heads, "max_length": scorer.max_length}
    if scorer.signature:  # a MICE model: its masked plan, kept layers only
        settings["model_kind"] = scorer.describe()
    meta = manifest(kind="probe", model=str(model_path or scorer.name), collection=rs.describe(), seed=cfg.seed,
                    settings=settings, timings=timings,
                    hooks={"flows": "blocks.{layer}.attn.hook_role_flow",
                           "rollout": "blocks.{layer}.hook_cls_rollout"})
    for name, df in tables.items():
        write_table(df, Path(cfg.out), name, meta)
    return tables


def summary(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per layer (mean over heads and pairs): the headline flows, and CLS's rollout / flow share on the document."""
    flows = tables["flows"]
    named = {"query2doc": ("query", "doc"), "doc2query": ("doc", "query"), "doc2cls": ("doc", "cls"),
             "cls2query": ("cls", "query"), "cls2doc": ("cls", "doc"), "doc2sep": ("doc", "sep")}
    mean = flows.groupby(["layer", "source", "target"], observed=True)["value"].mean()
    out = pd.DataFrame({k: mean.xs((s, t), level=("source", "target")) for k, (s, t) in named.items()})
    if "rollout" in tables:
        r = tables["rollout"]
        for method in ("rollout", "flow"):
            rows = r[(r["method"] == method) & (r["role"] == "doc")]
            if len(rows):
                out[f"{method}_cls_from_doc"] = rows.groupby("layer")["value"].mean()
    return out.reset_index()


def build_parser() -> argparse.ArgumentParser:
    d = ProbeConfig()
    p = argparse.ArgumentParser(prog="python -m probe.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Tables written to --out:\n" + __doc__.split("It writes, ")[1].split(":\n", 1)[1])
    p.add_argument("--model", default=None, help="cross-encoder folder, hub id, or a name: reference, "
                   "reference-dl20 (default: $MICE_MODEL or the reference cross-encoder)")
    p.add_argument("--collection", default=d.collection, help=f"collection name or BEIR folder (default {d.collection})")
    p.add_argument("--queries", type=int, default=d.queries, help=f"probe the first N queries (default {d.queries})")
    p.add_argument("--depth", type=int, default=d.depth,
                   help=f"candidates per query: the top-K BM25 documents (default {d.depth})")
    p.add_argument("--layers", default=d.layers, help="layers whose flows are captured, 0-based inclusive "
                   "ranges such as 0-2,5 (default all); rollout always uses every layer")
    p.add_argument("--heads", default=d.heads, help="heads whose flows are captured, e.g. 0-3 (default all)")
    p.add_argument("--backend", default=d.backend, choices=BACKENDS,
                   help="how attention is captured: hf = hooks on the Hugging Face model (fast, default); "
                   "transformer_lens = TransformerLens' TransformerBridge over the encoder (slower, a cross-check)")
    p.add_argument("--no-rollout", dest="rollout", action="store_false", help="skip the CLS attention rollout")
    p.add_argument("--flow-pairs", type=int, default=d.flow_pairs,
                   help=f"pairs (spread over queries) for attention flow by max-flow, the slow part; 0 skips it "
                   f"(default {d.flow_pairs})")
    p.add_argument("--no-attributions", dest="attributions", action="store_false",
                   help="skip Integrated Gradients")
    p.add_argument("--attribution-pairs", type=int, default=d.attribution_pairs,
                   help=f"pairs (spread over queries) for Integrated Gradients (default {d.attribution_pairs})")
    p.add_argument("--ig-steps", type=int, default=d.ig_steps,
                   help=f"Integrated Gradients interpolation steps (default {d.ig_steps})")
    p.add_argument("--ig-layer", default=d.ig_layer, choices=IG_LAYERS,
                   help=f"embedding layer attributed (default {d.ig_layer})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"pairs per batch (default {d.batch_size})")
    p.add_argument("--max-length", type=int, default=d.max_length,
                   help=f"max tokens per pair (default: the model folder's max_seq_length, else {DEFAULT_MAX_LENGTH})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"torch seed, recorded in the manifest (default {d.seed})")
    p.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    return p


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr keeps to our own progress and, on bad input, one line
    cfg = ProbeConfig(**vars(args))
    tables = probe(cfg)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 140):
        print(summary(tables).to_string(index=False))
        if "attributions" in tables:
            a = tables["attributions"]
            print("Integrated Gradients |attribution| share per role (mean over pairs): "
                  + ", ".join(f"{r}={v:.3f}" for r, v in a.groupby("role", sort=False)["abs_share"].mean().items())
                  + f"; max |delta| {a['delta'].abs().max():.2e}")
    print(f"wrote {', '.join(f'{k}.parquet' for k in tables)} to {cfg.out}")
    return 0


if __name__ == "__main__":
    main()
