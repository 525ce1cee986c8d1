"""Across layers: attention rollout and attention flow (Abnar & Zuidema, 2020) from CLS back to the input.

Both start from the residual-aware attention of each layer, averaged over heads::

    Â_l = rownorm(0.5 * mean_h A_l + 0.5 * I)        (real tokens only)

- **Rollout** multiplies them: ``R_l = Â_l @ Â_{l-1} @ ... @ Â_0``. Row CLS of ``R_l`` says how the CLS
  representation after layer ``l`` is mixed from the input tokens; its rows sum to 1.
- **Flow** treats the stacked ``Â`` as a capacity graph (node = layer × token, edge ``(l+1, i) → (l, j)``
  with capacity ``Â_l[i, j]``) and takes, for every input token ``j``, the max-flow from CLS after
  layer ``l`` to ``j`` at the input; the values are normalised to sum 1 (as in the authors' code).

Summed per token role (cls, query, sep1, doc, sep2) either gives "how much of CLS after layer ``l``
comes from the document" as one number per layer.

Cost: rollout is ``L`` matrix products per pair (computed on the fly by the capture hooks, see
``probe.capture``; memory ``batch × n × n``). Flow needs ``L × n`` max-flow problems per pair on a graph
with ``(L+1) n`` nodes and ``L n²`` edges; with scipy's Dinic solver (integer capacities, scaled by
``1e6``) a 6-layer model on a 100-token pair takes on the order of a second, so it is run on a few pairs
only (``--flow-pairs``). ``method="networkx"`` (Edmonds–Karp on float capacities) is the slow, exact
reference used by the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from .roles import FLOW_ROLES, N_FLOW_ROLES, N_ROLES

ROLLOUT_COLUMNS = ["collection", "query_id", "doc_id", "layer", "method", "role", "value"]
FLOW_SCALE = 1_000_000


def residual_attention(patterns: Sequence[torch.Tensor | np.ndarray]) -> np.ndarray:
    """Per-layer patterns ``(heads, n, n)`` of one pair (real tokens only) → ``Â`` of shape ``(L, n, n)``."""
    mats = []
    for p in patterns:
        a = np.asarray(p.detach().cpu().numpy() if isinstance(p, torch.Tensor) else p, dtype=np.float64)
        a = a.mean(axis=0) if a.ndim == 3 else a
        a = 0.5 * a + 0.5 * np.eye(a.shape[-1])
        mats.append(a / a.sum(axis=-1, keepdims=True))
    return np.stack(mats)


def rollout(a_hat: np.ndarray) -> np.ndarray:
    """Cumulative products ``R_l = Â_l @ R_{l-1}`` for every layer, shape ``(L, n, n)``."""
    out = np.empty_like(a_hat)
    acc = np.eye(a_hat.shape[-1])
    for layer, a in enumerate(a_hat):
        acc = a @ acc
        out[layer] = acc
    return out


def attention_flow(a_hat: np.ndarray, source: int = 0, *, method: str = "scipy") -> np.ndarray:
    """Normalised max-flow from token ``source`` after each layer ``l`` to every input token: ``(L, n)``."""
    n_layers, n, _ = a_hat.shape
    if method == "scipy":
        solve = _flow_solver_scipy(a_hat)
    elif method == "networkx":
        solve = _flow_solver_networkx(a_hat)
    else:
        raise ValueError(f"unknown max-flow method {method!r}; expected scipy or networkx")
    out = np.zeros((n_layers, n))
    for layer in range(n_layers):
        src = (layer + 1) * n + source
        values = np.array([solve(src, j) for j in range(n)], dtype=np.float64)
        total = values.sum()
        out[layer] = values / total if total > 0 else values
    return out


def _edges(a_hat: np.ndarray):
    n_layers, n, _ = a_hat.shape
    for layer in range(n_layers):
        rows, cols = np.nonzero(a_hat[layer] > 0)
        yield (layer + 1) * n + rows, layer * n + cols, a_hat[layer][rows, cols]


def _flow_solver_scipy(a_hat: np.ndarray):
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    n_nodes = (a_hat.shape[0] + 1) * a_hat.shape[1]
    parts = list(_edges(a_hat))
    src = np.concatenate([p[0] for p in parts])
    dst = np.concatenate([p[1] for p in parts])
    cap = np.rint(np.concatenate([p[2] for p in parts]) * FLOW_SCALE).astype(np.int32)
    keep = cap > 0
    graph = csr_matrix((cap[keep], (src[keep], dst[keep])), shape=(n_nodes, n_nodes), dtype=np.int32)

    def solve(s: int, t: int) -> float:
        return maximum_flow(graph, s, t, method="dinic").flow_value / FLOW_SCALE

    return solve


def _flow_solver_networkx(a_hat: np.ndarray):
    import networkx as nx

    graph = nx.DiGraph()
    for src, dst, cap in _edges(a_hat):
        graph.add_edges_from((int(s), int(d), {"capacity": float(c)}) for s, d, c in zip(src, dst, cap))

    def solve(s: int, t: int) -> float:
        if s not in graph or t not in graph:
            return 0.0
        return float(nx.maximum_flow_value(graph, s, t, flow_func=nx.algorithms.flow.edmonds_karp))

    return solve


def role_shares(weights: np.ndarray, roles: np.ndarray | torch.Tensor) -> np.ndarray:
    """Sum token weights ``(..., n)`` per role → ``(..., 5)`` (cls, query, sep1, doc, sep2)."""
    roles = np.asarray(roles.cpu().numpy() if isinstance(roles, torch.Tensor) else roles)
    onehot = np.eye(N_ROLES)[roles][:, :N_FLOW_ROLES]
    return np.asarray(weights) @ onehot


def cls_role_shares(
    patterns: Sequence[torch.Tensor], roles, *, flow: bool = False, method: str = "scipy"
) -> dict[str, np.ndarray]:
    """For one pair: ``{"rollout": (L, 5)}`` (and ``"flow"``) — CLS's share on each role after each layer."""
    a_hat = residual_attention(patterns)
    out = {"rollout": role_shares(rollout(a_hat)[:, 0, :], roles)}
    if flow:
        out["flow"] = role_shares(attention_flow(a_hat, 0, method=method), roles)
    return out


def shares_table(
    shares: dict[str, np.ndarray], *, query_ids: Sequence[str], doc_ids: Sequence[str], collection: str = ""
) -> pd.DataFrame:
    """Tidy table from ``{method: (pairs, L, 5)}``: collection, query_id, doc_id, layer, method, role,
    value."""
    frames = []
    for method, arr in shares.items():
        arr = np.asarray(arr, dtype=np.float64)
        p, layer, r = np.meshgrid(*(np.arange(k) for k in arr.shape), indexing="ij")
        frames.append(
            pd.DataFrame(
                {
                    "collection": collection,
                    "query_id": np.asarray(query_ids, dtype=object)[p.ravel()],
                    "doc_id": np.asarray(doc_ids, dtype=object)[p.ravel()],
                    "layer": layer.ravel().astype("int16"),
                    "method": method,
                    "role": np.asarray(FLOW_ROLES)[r.ravel()],
                    "value": arr.ravel(),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=ROLLOUT_COLUMNS)
    return pd.concat(frames, ignore_index=True)[ROLLOUT_COLUMNS]


def summarise_shares(table: pd.DataFrame) -> pd.DataFrame:
    """Mean share per collection × method × layer × role, wide over roles (one row per layer)."""
    wide = (
        table.groupby(["collection", "method", "layer", "role"], observed=True)["value"]
        .mean()
        .unstack("role")
    )
    return wide[[r for r in FLOW_ROLES if r in wide.columns]].reset_index()
