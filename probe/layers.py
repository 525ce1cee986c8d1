"""BERT-family layers in pieces: one layer for a subset of its rows, and the parts of a sequence classifier.

Two exact shortcuts run a BERT layer for some query rows only, against every key and value: the prefix-state
cache of the mask sweeps (``ablations.masking.prefix``: the rows a mask changes in its first layer, the CLS
row of the last layer) and the MICE execution plans (``ablations.mice.plan``: query-side rows, once per
distinct query, against cached document keys and values). :func:`layer_rows` is that computation for both.
It uses the layer's own submodules in the model's order (projections, attention output, feed-forward), so
its rows equal those of the layer's own forward under the same additive mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: What a layer's ``attention.self`` needs for :func:`layer_rows`.
_SELF_ATTENTION_PARTS = ("query", "key", "value", "attention_head_size")


def bert_base(model) -> torch.nn.Module | None:
    """The encoder of a BERT-family sequence classifier (``embeddings``, ``encoder.layer``, ``pooler``, with a
    ``classifier`` on the model), or ``None`` when ``model`` is not one."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    ok = (
        base is not None
        and hasattr(base, "embeddings")
        and hasattr(getattr(base, "encoder", None), "layer")
        and getattr(base, "pooler", None) is not None
        and hasattr(model, "classifier")
    )
    return base if ok else None


def is_bert_layer(layer) -> bool:
    """Whether ``layer`` is a BERT self-attention layer :func:`layer_rows` can compute (query / key / value
    projections, ``intermediate`` and ``output``; no cross-attention)."""
    attn = getattr(getattr(layer, "attention", None), "self", None)
    return (
        attn is not None
        and all(hasattr(attn, a) for a in _SELF_ATTENTION_PARTS)
        and all(hasattr(layer, a) for a in ("intermediate", "output"))
        and not getattr(layer, "add_cross_attention", False)
    )


def split_heads(x: torch.Tensor, head_size: int) -> torch.Tensor:
    """``(b, n, heads × d) → (b, heads, n, d)``."""
    b, n, _ = x.shape
    return x.view(b, n, -1, head_size).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(b, heads, n, d) → (b, n, heads × d)``."""
    b, _, n, _ = x.shape
    return x.transpose(1, 2).reshape(b, n, -1)


def padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask ``(b, 1, 1, k)`` of an attention mask ``(b, k)``: 0 on real keys, -inf on padded ones."""
    pad = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
    return pad.masked_fill_(attention_mask == 0, float("-inf"))[:, None, None]


def layer_rows(
    layer,
    rows: torch.Tensor,
    kv: torch.Tensor,
    mask: torch.Tensor | None,
    extra: tuple[torch.Tensor, torch.Tensor] | None = None,
    expand: torch.Tensor | None = None,
) -> torch.Tensor:
    """One BERT layer for the hidden states ``rows (b, m, H)`` of some positions: ``(b, m, H)``.

    The rows attend to the keys and values projected from ``kv (b, k, H)`` (every token of the sequence,
    the rows among them) followed by the precomputed, not yet head-split keys and values ``extra = (K, V)``,
    each ``(b, k2, H)``, if given; ``mask`` is the additive mask ``(b, heads|1, m, k + k2)`` of those rows.

    ``expand (b,)``: ``rows`` and ``kv`` are given once per distinct source (``(nq, m, H)``) and row ``i`` of
    the result uses ``rows[expand[i]]`` — the projections are computed once per source, not per row.
    Attention dropout applies in training mode, as in the layer's own forward.
    """
    attn = layer.attention.self
    q, k, v = attn.query(rows), attn.key(kv), attn.value(kv)
    if expand is not None:
        q, k, v, rows = q[expand], k[expand], v[expand], rows[expand]
    if extra is not None:
        k, v = torch.cat([k, extra[0]], 1), torch.cat([v, extra[1]], 1)
    d = attn.attention_head_size
    p = attn.dropout.p if layer.training else 0.0
    ctx = F.scaled_dot_product_attention(
        split_heads(q, d),
        split_heads(k, d),
        split_heads(v, d),
        attn_mask=mask,
        dropout_p=p,
        scale=attn.scaling,
    )
    out = layer.attention.output(merge_heads(ctx), rows)
    return layer.output(layer.intermediate(out), out)


def classifier_logits(model, h: torch.Tensor) -> torch.Tensor:
    """The classification head of a BERT-family sequence classifier on the last hidden states ``h`` (all
    tokens, or the CLS row ``(b, 1, H)``: the pooler reads position 0): pooler, dropout, classifier."""
    pooled = getattr(model, model.base_model_prefix).pooler(h)
    return model.classifier(model.dropout(pooled) if hasattr(model, "dropout") else pooled)
