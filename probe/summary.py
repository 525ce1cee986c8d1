"""The probe's headline table: per layer, the flows a reader looks at first and CLS's share of the
document."""

from __future__ import annotations

import pandas as pd


def summary(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per layer (mean over heads and pairs): the headline flows, and CLS's rollout / flow share on the
    document."""
    flows = tables["flows"]
    named = {
        "query2doc": ("query", "doc"),
        "doc2query": ("doc", "query"),
        "doc2cls": ("doc", "cls"),
        "cls2query": ("cls", "query"),
        "cls2doc": ("cls", "doc"),
        "doc2sep": ("doc", "sep"),
    }
    mean = flows.groupby(["layer", "source", "target"], observed=True)["value"].mean()
    out = pd.DataFrame({k: mean.xs((s, t), level=("source", "target")) for k, (s, t) in named.items()})
    if "rollout" in tables:
        r = tables["rollout"]
        for method in ("rollout", "flow"):
            rows = r[(r["method"] == method) & (r["role"] == "doc")]
            if len(rows):
                out[f"{method}_cls_from_doc"] = rows.groupby("layer")["value"].mean()
    return out.reset_index()
