"""A MICE configuration as a layer × interaction grid: for every role pair (``source2target``: the source
attends to the target) and every layer, whether the attention is kept, removed, kept by some heads only,
or the layer is dropped. One table for the explorer and the reports (``interaction_grid``)."""

from __future__ import annotations

import pandas as pd

from ablations.mice.config import MiceConfig
from probe.roles import ROLE_NAMES, TOKEN_ROLES

KEPT, REMOVED, DROPPED = "kept", "removed", "dropped"


def interaction_grid(cfg: MiceConfig) -> pd.DataFrame:
    """Long table, one row per interaction × layer: ``interaction, source, target, layer, state, kept``
    (``kept`` = share of heads that keep it, 1 or 0 unless heads differ; ``NaN`` for a dropped layer;
    ``state`` = kept / removed / dropped / ``k/H heads``). Self-interactions included (``query2query``)."""
    table = cfg.allowed()  # (layer, head|1, source, target), mask + merge constraint
    rows = []
    for s in TOKEN_ROLES:
        for t in TOKEN_ROLES:
            name = f"{ROLE_NAMES[s]}2{ROLE_NAMES[t]}"
            for layer in range(cfg.num_layers):
                if cfg.drop_layer is not None and layer >= cfg.drop_layer:
                    kept, state = float("nan"), DROPPED
                else:
                    heads = table[layer, :, s, t]
                    kept = float(heads.float().mean())
                    n = int(heads.sum())
                    state = KEPT if kept == 1 else REMOVED if kept == 0 else f"{n}/{heads.numel()} heads"
                rows.append(
                    {
                        "interaction": name,
                        "source": ROLE_NAMES[s],
                        "target": ROLE_NAMES[t],
                        "layer": layer,
                        "state": state,
                        "kept": kept,
                    }
                )
    return pd.DataFrame(rows)


def grid_wide(grid: pd.DataFrame) -> pd.DataFrame:
    """``interaction_grid`` as one row per interaction and one ``L<i>`` column of states per layer."""
    wide = grid.pivot(index="interaction", columns="layer", values="state")
    order = list(dict.fromkeys(grid["interaction"]))
    wide = wide.reindex(order)
    wide.columns = [f"L{c}" for c in wide.columns]
    return wide.reset_index()


def summary_lines(cfg: MiceConfig) -> list[str]:
    """What a reader needs first: the architecture, the plan, lengths, weights and provenance."""
    merge = cfg.merge_layer if cfg.merge_layer is not None else "none"
    kept = cfg.drop_layer if cfg.drop_layer is not None else cfg.num_layers
    lines = [
        f"{cfg.label}",
        f"base model `{cfg.base_model}` · {cfg.num_layers} layers × {cfg.num_heads} heads · layers "
        f"0-{kept - 1} run, {cfg.num_layers - kept} dropped · query↔document interaction from layer {merge}",
        f"plan {cfg.plan or 'auto (cheapest exact)'} · document positions {cfg.doc_positions} · max lengths: "
        f"pair {cfg.max_length}, query {cfg.max_query_length}, document {cfg.max_doc_length} · "
        f"cache {cfg.cache_dtype}",
        f"weights `{cfg.weights}`" if cfg.weights else "weights: the base model's (not retrained)",
    ]
    if cfg.source:
        lines.append("source: " + ", ".join(f"{k} = {v}" for k, v in cfg.source.items()))
    if not cfg.score_reads_document():
        lines.append("warning: with this table the score cannot depend on the document at all")
    return lines
