"""Model families: where each transformers architecture keeps its attention, behind one registry.

The toolkit intercepts attention at one point (:func:`probe.attention.attention_context`): every
self-attention module that calls transformers' attention interface runs the toolkit's function, which
adds the interaction mask and calls the capture hooks. A :class:`Family` says, for one architecture, where
the encoder's blocks are and which module of a block is its self-attention; :func:`family_of` picks the
family from the model's ``config.model_type`` and refuses, in one line, a model whose attention cannot be
intercepted this way.

=================  =========================================  ================================================
family             model types                                 attention module
=================  =========================================  ================================================
``bert``           bert, electra, roberta, xlm-roberta,        ``<base>.encoder.layer[i].attention.self``
                   camembert
``distilbert``     distilbert                                  ``<base>.transformer.layer[i].attention``
``modernbert``     modernbert                                  ``<base>.layers[i].attn`` (rotary positions and
                                                               local-window layers: the window is in the mask)
=================  =========================================  ================================================

Refused: ``deberta`` / ``deberta-v2`` (DeBERTa v1-v3, e.g. mxbai-rerank): its disentangled attention adds
content→position and position→content terms inside ``DisentangledSelfAttention`` and never calls the
attention interface, so there is no point at which to add a mask or read a pattern without rewriting that
attention. Everything else that is not listed is refused too, naming its model type.

Pair templates follow each tokenizer's own special tokens (:func:`pair_template`): ``[CLS] q [SEP] d
[SEP]`` for BERT-style tokenizers, ``<s> q </s></s> d </s>`` for RoBERTa-style ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import BadInput


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    blocks: Callable[[torch.nn.Module], list]  # the encoder blocks of the base model, in order
    attention: Callable[[torch.nn.Module], torch.nn.Module | None]  # a block's self-attention module
    # whether the block-by-block paths (the prefix cache of sweeps, MICE execution plans) can run it: they
    # call BERT's own layer, pooler and classifier pieces (probe.layers)
    bert_layers: bool = False


def _get(obj, *names):
    for name in names:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


FAMILIES: tuple[Family, ...] = (
    Family(
        "bert",
        ("bert", "electra", "roberta", "xlm-roberta", "camembert"),
        lambda base: list(_get(base, "encoder", "layer") or []),
        lambda block: _get(block, "attention", "self"),
        bert_layers=True,
    ),
    Family(
        "distilbert",
        ("distilbert",),
        lambda base: list(_get(base, "transformer", "layer") or []),
        lambda block: getattr(block, "attention", None),
    ),
    Family(
        "modernbert",
        ("modernbert",),
        lambda base: list(getattr(base, "layers", None) or []),
        lambda block: getattr(block, "attn", None),
    ),
)

#: Families that transformers can load but whose attention the toolkit cannot intercept, and why.
REFUSED = {
    "deberta": "DeBERTa's disentangled attention (content-to-position and position-to-content terms) is "
    "computed inside its own attention module without transformers' attention interface, so no mask can be "
    "added nor pattern read at the toolkit's one interception point",
}
REFUSED["deberta-v2"] = REFUSED["deberta"]


def supported_model_types() -> list[str]:
    return [t for f in FAMILIES for t in f.model_types]


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The encoder under a task head (``model.bert``, ``model.roberta``, ``model.model`` ...)."""
    return getattr(model, getattr(model, "base_model_prefix", ""), None) or model


def family_of(model: torch.nn.Module) -> Family:
    """The :class:`Family` of ``model`` by its ``config.model_type``; anything else is refused in one line
    naming the type and what is supported."""
    config = getattr(model, "config", None)
    model_type = str(getattr(config, "model_type", "") or type(model).__name__).replace("_", "-")
    if model_type in REFUSED:
        raise BadInput(f"model family {model_type!r} is not supported: {REFUSED[model_type]}")
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise BadInput(
        f"model family {model_type!r} ({type(model).__name__}) is not supported; supported families: "
        f"{', '.join(supported_model_types())}"
    )


def self_attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention module of every layer, in layer order, for any supported family."""
    family = family_of(model)
    blocks = family.blocks(base_model(model))
    if not blocks:
        raise BadInput(f"model {type(model).__name__} ({family.name} family) has no encoder layers")
    mods = []
    for i, block in enumerate(blocks):
        attn = family.attention(block)
        if attn is None or not hasattr(attn, "config"):
            raise BadInput(
                f"layer {i} of {type(model).__name__} exposes no self-attention module that uses "
                "transformers' attention interface; its attention cannot be captured or masked"
            )
        mods.append(attn)
    return mods


@dataclass(frozen=True)
class PairTemplate:
    """How a tokenizer wraps a pair: ``cls query sep*middle document sep``."""

    cls_id: int
    sep_id: int
    middle: int  # separators between query and document: 1 ([SEP]) or 2 (</s></s>)

    def describe(self, tokenizer) -> str:
        cls, sep = tokenizer.convert_ids_to_tokens([self.cls_id, self.sep_id])
        return f"{cls} query {' '.join([sep] * self.middle)} document {sep}"


def pair_template(tokenizer) -> PairTemplate:
    """Read the pair template from the tokenizer itself (one pair encoded with and without special
    tokens); a template that is not ``cls A sep+ B sep`` is refused in one line."""
    a = tokenizer("alpha", add_special_tokens=False)["input_ids"]
    b = tokenizer("omega", add_special_tokens=False)["input_ids"]
    ids = tokenizer("alpha", "omega")["input_ids"]
    start = next((i for i in range(len(ids)) if ids[i : i + len(a)] == a), None)
    end = next((i for i in range(len(ids) - len(b), -1, -1) if ids[i : i + len(b)] == b), None)
    if start is not None and end is not None and start == 1 and end > start + len(a):
        middle = ids[start + len(a) : end]
        suffix = ids[end + len(b) :]
        if len(suffix) == 1 and middle and set(middle) == {suffix[0]}:
            return PairTemplate(cls_id=ids[0], sep_id=suffix[0], middle=len(middle))
    shown = " ".join(tokenizer.convert_ids_to_tokens(ids))
    raise BadInput(
        f"tokenizer {type(tokenizer).__name__} wraps a pair as {shown!r}; token roles need "
        "'cls query sep document sep' (BERT) or 'cls query sep sep document sep' (RoBERTa)"
    )
