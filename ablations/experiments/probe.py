"""Probe a cross-encoder on a real query set (the library behind ``python -m probe.run``).

:func:`probe` re-ranks the top candidates of a collection's first queries while ``probe.capture`` collects,
per layer and head, the role→role attention flows and the CLS rollout; on a few pairs, attention flow
(max-flow) and Integrated Gradients. It returns the tables and writes them in the common results format;
the table columns are listed in ``probe/run.py``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ablations.data.collections import RerankSet, load_collection
from ablations.paths import resolve_model
from ablations.results import manifest, write_table
from ablations.scorers import load_cross_encoder
from probe.attributions import integrated_gradients, role_summary
from probe.capture import capture, flow_name, parse_indices, rollout_name, run_with_cache
from probe.flows import aggregate_flows, flow_table, per_query_flows
from probe.model import CrossEncoder
from probe.options import ProbeConfig  # noqa: F401 - re-exported: the probe driver's settings
from probe.rollout import cls_role_shares, shares_table


def spread_pairs(rs: RerankSet, n: int) -> list[int]:
    """Indices of ``n`` candidate rows spread over queries: every query's rank-1 candidate, then rank 2,
    ..."""
    cand = rs.candidates.reset_index(drop=True)
    order = {q: i for i, q in enumerate(rs.query_ids)}
    keys = pd.DataFrame({"rank": cand["rank"], "q": cand["query_id"].map(order)})
    return keys.sort_values(["rank", "q"], kind="stable").index[:n].tolist()


def probe(cfg: ProbeConfig, scorer: CrossEncoder | None = None) -> dict[str, pd.DataFrame]:
    """Run the probe of ``cfg`` and write its tables to ``cfg.out``; returns the tables."""
    cfg.validate()
    torch.manual_seed(cfg.seed)
    model_path = cfg.model if scorer is not None else resolve_model(cfg.model)
    scorer = scorer or load_cross_encoder(
        model_path, max_length=cfg.max_length, max_query_length=cfg.max_query_length
    )  # a MICE model: its masked plan
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
        scores = cap.score(pairs, batch_size=cfg.batch_size, progress=cfg.progress)
    cache = cap.cache
    timings["capture_s"] = round(time.perf_counter() - start, 2)
    tables["scores"] = rs.candidates[["query_id", "doc_id", "rank"]].assign(score=scores.astype(float))
    tables["flows"] = flow_table(
        {la: cache[flow_name(la)] for la in layers},
        query_ids=qids,
        doc_ids=dids,
        heads=heads,
        collection=rs.name,
    )
    tables["flows_per_query"] = per_query_flows(tables["flows"])
    tables["flows_summary"] = aggregate_flows(tables["flows"])

    shares = {}
    if cfg.rollout:
        shares["rollout"] = np.stack(
            [cache[rollout_name(la)].numpy() for la in range(scorer.num_layers)], axis=1
        )
    rollout_tables = (
        [shares_table(shares, query_ids=qids, doc_ids=dids, collection=rs.name)] if shares else []
    )
    if cfg.flow_pairs:
        start = time.perf_counter()
        sel = spread_pairs(rs, cfg.flow_pairs)
        _, pat = run_with_cache(
            scorer, [pairs[i] for i in sel], ("pattern",), batch_size=cfg.batch_size, backend=cfg.backend
        )
        flow = np.stack(
            [
                cls_role_shares(
                    [pat[f"blocks.{la}.attn.hook_pattern"][k] for la in range(scorer.num_layers)],
                    pat.roles[k],
                    flow=True,
                )["flow"]
                for k in range(len(sel))
            ]
        )
        rollout_tables.append(
            shares_table(
                {"flow": flow},
                query_ids=[qids[i] for i in sel],
                doc_ids=[dids[i] for i in sel],
                collection=rs.name,
            )
        )
        timings["attention_flow_s"] = round(time.perf_counter() - start, 2)
    if rollout_tables:
        tables["rollout"] = pd.concat(rollout_tables, ignore_index=True)

    if cfg.attributions and cfg.attribution_pairs:
        start = time.perf_counter()
        sel = spread_pairs(rs, cfg.attribution_pairs)
        tokens, info = integrated_gradients(
            scorer, [pairs[i] for i in sel], n_steps=cfg.ig_steps, layer=cfg.ig_layer
        )
        ids = pd.DataFrame(
            {
                "pair": range(len(sel)),
                "collection": rs.name,
                "query_id": [qids[i] for i in sel],
                "doc_id": [dids[i] for i in sel],
            }
        )
        summary = ids.merge(role_summary(tokens, info), on="pair").drop(columns="pair")
        tables["attributions"] = summary
        tables["attribution_tokens"] = ids.merge(tokens, on="pair").drop(columns="pair")
        timings["attributions_s"] = round(time.perf_counter() - start, 2)

    tables["scores"].insert(0, "collection", rs.name)
    settings = asdict(cfg) | {"layers": layers, "heads": heads, "max_length": scorer.max_length}
    if scorer.signature:  # a MICE model: its masked plan, kept layers only
        settings["model_kind"] = scorer.describe()
    meta = manifest(
        kind="probe",
        model=str(model_path or scorer.name),
        collection=rs.describe(),
        seed=cfg.seed,
        settings=settings,
        timings=timings,
        hooks={"flows": "blocks.{layer}.attn.hook_role_flow", "rollout": "blocks.{layer}.hook_cls_rollout"},
    )
    for name, df in tables.items():
        write_table(df, Path(cfg.out), name, meta)
    return tables
