"""Role→role attention flows: how much attention each token role sends to each role, per layer and head.

For one pair, layer and head with attention pattern ``A`` (rows: attending tokens, each row sums to 1 over
the real tokens), the flow from source role ``s`` to target role ``t`` is the mean over the tokens of role
``s`` of the attention mass they put on the tokens of role ``t``::

    flow[s, t] = mean_{i in s} sum_{j in t} A[i, j]

so ``flow[s, :]`` sums to 1 for every source role present. Padding is neither a source nor a target.
Computed from one-hot role matrices with two batched matmuls (:func:`role_flows`), which is what the
capture hooks run on the fly so that the full ``(batch, heads, q, k)`` pattern is never kept.

Tables are tidy (one row per pair × layer × head × source × target): see :func:`flow_table`,
:func:`aggregate_flows` (mean, std, count over pairs) and :func:`per_query_flows`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from .roles import FLOW_ROLES, N_FLOW_ROLES, N_ROLES, Role

#: A derived target: both separators together (``sep = sep1 + sep2``).
SEP_TARGET = "sep"
FLOW_COLUMNS = ["collection", "query_id", "doc_id", "layer", "head", "source", "target", "value"]


def role_onehot(roles: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(batch, seq)`` role codes → ``(batch, seq, 5)`` one-hot over the token roles; padding rows are 0."""
    onehot = torch.nn.functional.one_hot(roles.long(), num_classes=N_ROLES)
    return onehot[..., :N_FLOW_ROLES].to(dtype)


def source_weights(onehot: torch.Tensor) -> torch.Tensor:
    """``(batch, seq, 5)`` one-hot → ``(batch, 5, seq)`` averaging weights (1/count of the role, 0 elsewhere).

    A role with no token in a row (it cannot happen for a well-formed pair) gets all-zero weights, so its
    flow row is 0, not NaN.
    """
    counts = onehot.sum(dim=1, keepdim=True)  # (b, 1, R)
    return (onehot / counts.clamp(min=1)).transpose(1, 2)


def role_flows(
    pattern: torch.Tensor, onehot: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Reduce a pattern ``(batch, heads, q, k)`` to flows ``(batch, heads, 5 source, 5 target)``.

    ``onehot`` is :func:`role_onehot` of the batch's roles; ``weights`` its :func:`source_weights`
    (pass it when calling once per layer to avoid recomputing it).
    """
    if weights is None:
        weights = source_weights(onehot)
    onehot = onehot.to(pattern.dtype)
    weights = weights.to(pattern.dtype)
    # average the attending tokens of each source role first: (b, 1, R, q) @ (b, h, q, k) -> (b, h, R, k),
    # then sum the attended tokens per target role: -> (b, h, R, R). Cheaper than summing targets first.
    return torch.matmul(torch.matmul(weights.unsqueeze(1), pattern), onehot.unsqueeze(1))


# ---------------------------------------------------------------------- tables
def flow_table(
    flows: dict[int, np.ndarray | torch.Tensor],
    *,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    heads: Sequence[int],
    collection: str = "",
    with_sep: bool = True,
) -> pd.DataFrame:
    """Tidy flow table from ``{layer: (pairs, heads, 5, 5)}``, one row per pair × layer × head × source ×
    target.

    Columns: collection, query_id, doc_id, layer, head, source, target, value. ``with_sep`` adds the
    derived target ``sep`` (sep1 + sep2) for every source. Text columns are categoricals (the table of a
    full collection has millions of rows); values are float64.
    """
    n_pairs = len(query_ids)
    if len(doc_ids) != n_pairs:
        raise ValueError(f"{len(query_ids)} query ids but {len(doc_ids)} doc ids")
    layers = sorted(flows)
    if not layers:
        return pd.DataFrame(columns=FLOW_COLUMNS)
    targets = list(FLOW_ROLES) + ([SEP_TARGET] if with_sep else [])
    arrays = []
    for layer in layers:
        arr = flows[layer]
        arr = np.asarray(
            arr.detach().cpu().numpy() if isinstance(arr, torch.Tensor) else arr, dtype=np.float64
        )
        if arr.shape != (n_pairs, len(heads), N_FLOW_ROLES, N_FLOW_ROLES):
            raise ValueError(
                f"layer {layer}: flows of shape {arr.shape}, expected "
                f"{(n_pairs, len(heads), N_FLOW_ROLES, N_FLOW_ROLES)}"
            )
        if with_sep:
            arr = np.concatenate([arr, arr[..., [int(Role.SEP1)]] + arr[..., [int(Role.SEP2)]]], axis=-1)
        arrays.append(arr)
    values = np.stack(arrays, axis=1)  # (pairs, layers, heads, sources, targets)
    p, la, h, src, tgt = (
        g.ravel() for g in np.meshgrid(*(np.arange(k) for k in values.shape), indexing="ij")
    )
    q_codes, q_names = pd.factorize(pd.Series(list(query_ids), dtype=object))
    d_codes, d_names = pd.factorize(pd.Series(list(doc_ids), dtype=object))
    return pd.DataFrame(
        {
            "collection": pd.Categorical.from_codes(np.zeros(len(p), dtype=np.int8), categories=[collection]),
            "query_id": pd.Categorical.from_codes(q_codes[p], categories=q_names),
            "doc_id": pd.Categorical.from_codes(d_codes[p], categories=d_names),
            "layer": np.asarray(layers, dtype=np.int16)[la],
            "head": np.asarray(heads, dtype=np.int16)[h],
            "source": pd.Categorical.from_codes(src, categories=list(FLOW_ROLES)),
            "target": pd.Categorical.from_codes(tgt, categories=targets),
            "value": values.ravel(),
        }
    )


def per_query_flows(
    table: pd.DataFrame, keys: Sequence[str] = ("layer", "head", "source", "target")
) -> pd.DataFrame:
    """Mean flow per query (over its pairs): collection, query_id, *keys, value, pairs."""
    group = ["collection", "query_id", *keys]
    out = table.groupby(group, sort=False, observed=True)["value"].agg(["mean", "size"]).reset_index()
    return out.rename(columns={"mean": "value", "size": "pairs"})


def aggregate_flows(
    table: pd.DataFrame, keys: Sequence[str] = ("layer", "head", "source", "target")
) -> pd.DataFrame:
    """Mean and spread of the flows over a query set.

    One row per collection × ``keys`` with: ``mean``, ``std`` and ``count`` over pairs, and ``query_mean``,
    ``query_std``, ``queries`` over the per-query means (each query weighted once, however many pairs it
    has). Leave ``head`` out of ``keys`` to average over heads as well.
    """
    keys = list(keys)
    group = ["collection", *keys]
    pairs = table.groupby(group, sort=False, observed=True)["value"].agg(["mean", "std", "count"])
    queries = (
        per_query_flows(table, keys)
        .groupby(group, sort=False, observed=True)["value"]
        .agg(query_mean="mean", query_std="std", queries="count")
    )
    return pairs.join(queries).reset_index()


def flow_matrix(table: pd.DataFrame, layer: int, head: int | None = None) -> pd.DataFrame:
    """Source × target matrix of mean flows in one layer (one head, or the mean over heads)."""
    rows = table[table["layer"] == layer]
    if head is not None:
        rows = rows[rows["head"] == head]
    mat = rows.groupby(["source", "target"], observed=True)["value"].mean().unstack("target")
    targets = [t for t in (*FLOW_ROLES, SEP_TARGET) if t in mat.columns]
    return mat.reindex(index=[s for s in FLOW_ROLES if s in mat.index], columns=targets)
