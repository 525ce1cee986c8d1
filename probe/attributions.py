"""Integrated Gradients attributions of the relevance score to each input token, summarised per role.

captum's ``LayerIntegratedGradients`` on the embedding layer of the encoder (``embeddings``: the summed
word + position + type embeddings after LayerNorm; or ``word_embeddings``). The baseline is the same
pair with every query and document token replaced by ``[PAD]`` (CLS and both SEPs kept, same attention
mask), so an attribution says how much a token's *content* moves the score away from an empty pair.
A token's attribution is the sum over the hidden dimension; per role we report the signed sum and the
share of the absolute attribution mass. Completeness makes the attributions of a pair sum to
``score - baseline_score``; the gap, captum's convergence delta, is reported per pair and shrinks with
``n_steps``.

    tokens, pairs = integrated_gradients(scorer, [(query, doc), ...], n_steps=32)
    roles = role_summary(tokens, pairs)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from .errors import BadInput
from .model import CrossEncoder, Pair, PairBatch
from .options import IG_LAYERS as LAYERS
from .roles import FLOW_ROLES, ROLE_NAMES, Role


def embedding_layer(scorer: CrossEncoder, layer: str = "embeddings") -> torch.nn.Module:
    base = getattr(scorer.model, scorer.model.base_model_prefix, scorer.model)
    emb = getattr(base, "embeddings", None)
    if layer not in LAYERS:
        raise BadInput(f"attribution layer {layer!r} is unknown; expected one of {', '.join(LAYERS)}")
    module = emb if layer == "embeddings" else getattr(emb, "word_embeddings", None)
    if module is None:
        raise BadInput(
            f"model {scorer.name!r} has no {layer} module under {scorer.model.base_model_prefix!r}"
        )
    return module


def baseline_ids(input_ids: torch.Tensor, roles: torch.Tensor, pad_id: int) -> torch.Tensor:
    """The pair with its query and document tokens replaced by ``pad_id`` (CLS, SEPs and padding kept)."""
    content = (roles == int(Role.QUERY)) | (roles == int(Role.DOC))
    return torch.where(content, torch.full_like(input_ids, pad_id), input_ids)


def integrated_gradients(
    scorer: CrossEncoder,
    pairs: Sequence[Pair],
    *,
    n_steps: int = 32,
    batch_size: int = 4,
    internal_batch_size: int | None = 64,
    layer: str = "embeddings",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-token and per-pair Integrated Gradients results for ``pairs``.

    Returns ``tokens`` (pair, position, token, role, attribution) and ``pair_info`` (pair, score,
    baseline_score, attribution_sum, delta), where ``pair`` indexes ``pairs``.
    """
    from captum.attr import LayerIntegratedGradients

    if n_steps < 2:
        raise BadInput(f"n_steps {n_steps} must be >= 2")
    module = embedding_layer(scorer, layer)
    pad_id = scorer.tokenizer.pad_token_id
    if pad_id is None:
        raise BadInput(
            f"tokenizer of {scorer.name!r} has no [PAD] token for the Integrated Gradients baseline"
        )

    def forward(input_ids, attention_mask, roles, token_type_ids=None, position_ids=None):
        # the scorer's own forward (a MICE model's masked plan included); captum expands every tensor argument
        return scorer.forward(PairBatch(input_ids, attention_mask, roles, token_type_ids, [], position_ids))

    lig = LayerIntegratedGradients(forward, module)
    token_rows, pair_rows = [], []
    for batch in scorer.batches(pairs, batch_size):
        batch = batch.to(scorer.device)
        base = baseline_ids(batch.input_ids, batch.roles, pad_id)
        extra = (batch.attention_mask, batch.roles, batch.token_type_ids, batch.position_ids)
        attr, delta = lig.attribute(
            batch.input_ids,
            baselines=base,
            additional_forward_args=extra,
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=True,
        )
        per_token = attr.sum(dim=-1).detach().float().cpu().numpy()
        with torch.no_grad():
            scores = forward(batch.input_ids, *extra).float().cpu().numpy()
            base_scores = forward(base, *extra).float().cpu().numpy()
        ids, roles = batch.input_ids.cpu().numpy(), batch.roles.cpu().numpy()
        for row, pair in enumerate(batch.index):
            real = roles[row] != int(Role.PAD)
            positions = np.nonzero(real)[0]
            tokens = scorer.tokenizer.convert_ids_to_tokens(ids[row][positions].tolist())
            token_rows.append(
                pd.DataFrame(
                    {
                        "pair": pair,
                        "position": positions.astype("int32"),
                        "token": tokens,
                        "role": np.asarray(ROLE_NAMES)[roles[row][positions]],
                        "attribution": per_token[row][positions],
                    }
                )
            )
            pair_rows.append(
                {
                    "pair": pair,
                    "score": float(scores[row]),
                    "baseline_score": float(base_scores[row]),
                    "attribution_sum": float(per_token[row][positions].sum()),
                    "delta": float(delta[row]),
                }
            )
    tokens = (
        pd.concat(token_rows, ignore_index=True)
        if token_rows
        else pd.DataFrame(columns=["pair", "position", "token", "role", "attribution"])
    )
    info = pd.DataFrame(pair_rows, columns=["pair", "score", "baseline_score", "attribution_sum", "delta"])
    return tokens.sort_values(["pair", "position"], kind="stable").reset_index(drop=True), info.sort_values(
        "pair", kind="stable"
    ).reset_index(drop=True)


def role_summary(tokens: pd.DataFrame, pair_info: pd.DataFrame) -> pd.DataFrame:
    """One row per pair × role: attribution (signed sum), abs_share (of the pair's absolute mass),
    tokens, plus the pair's score, baseline_score and convergence delta."""
    t = tokens.assign(abs_attribution=tokens["attribution"].abs())
    grouped = (
        t.groupby(["pair", "role"], observed=True)
        .agg(
            attribution=("attribution", "sum"),
            abs_attribution=("abs_attribution", "sum"),
            tokens=("attribution", "size"),
        )
        .reset_index()
    )
    full = pd.MultiIndex.from_product([pair_info["pair"], list(FLOW_ROLES)], names=["pair", "role"])
    grouped = grouped.set_index(["pair", "role"]).reindex(full, fill_value=0).reset_index()
    total = grouped.groupby("pair")["abs_attribution"].transform("sum")
    grouped["abs_share"] = np.where(total > 0, grouped["abs_attribution"] / total.where(total > 0, 1), 0.0)
    out = grouped.drop(columns="abs_attribution").merge(pair_info, on="pair", how="left")
    return out[["pair", "role", "attribution", "abs_share", "tokens", "score", "baseline_score", "delta"]]
