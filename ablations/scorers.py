"""One function from a model name or folder to the right scorer: every CLI, the app and the reports use it.

What a path holds decides the kind (:func:`model_kind`):

- ``mice`` — a MICE configuration (``mice.json``) or a retrained MICE folder holding one;
- ``late-interaction`` — a MaxSim or LITE folder from ``python -m ablations.retrain``
  (``late_interaction.json``);
- ``bi-encoder`` — a sentence-transformers bi-encoder folder (``modules.json``; e.g. ``minilm-l6``, the
  trainer's free teacher): cosine of the query's and the document's embeddings
  (:class:`~ablations.data.teacher.BiEncoder`), for scoring only;
- ``cross-encoder`` — anything else: a transformers / sentence-transformers cross-encoder folder or hub id.

:func:`load_scorer` loads it for one of two uses. For *scoring* (``attention=False``, ``ablations.evaluate``)
each kind runs its fastest exact plan: :class:`~probe.model.CrossEncoder`,
:class:`~ablations.mice.model.MiceModel`, :class:`~ablations.mice.late_interaction.LateInteractionScorer`.
For the *attention tools* (``attention=True``: the probe, the ablation runner, the explorer) it returns the
cross-encoder surface: a cross-encoder, or a MICE model as :class:`~ablations.mice.view.MiceCrossEncoder`
(its masked plan); a late-interaction model has no cross-attention and is refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from ablations.data.teacher import BiEncoder, is_bi_encoder
from ablations.mice.late_interaction import CONFIG_FILE as LATE_CONFIG
from ablations.mice.late_interaction import LateInteractionScorer
from ablations.mice.model import MiceModel
from ablations.mice.view import MiceCrossEncoder
from ablations.paths import mice_config_path, resolve_model
from probe.errors import BadInput
from probe.model import CrossEncoder, Scorer, quiet_transformers

CROSS_ENCODER, MICE, LATE, BI_ENCODER = "cross-encoder", "mice", "late-interaction", "bi-encoder"


def model_kind(path: str) -> str:
    """``mice``, ``late-interaction``, ``bi-encoder`` or ``cross-encoder``, read from what ``path`` holds."""
    if mice_config_path(path) is not None:
        return MICE
    if (Path(path).expanduser() / LATE_CONFIG).is_file():
        return LATE
    if is_bi_encoder(path):
        return BI_ENCODER
    return CROSS_ENCODER


def model_depth(name: str | None) -> int | None:
    """The number of encoder layers a model name or folder holds, read from its ``config.json`` (or a MICE
    configuration's ``num_layers``) without loading weights; ``None`` when it cannot be told (a hub id,
    an unreadable folder). What depth-aware defaults (``mice-step3``'s K) are chosen from."""
    try:
        path = resolve_model(name)
    except BadInput:
        return None
    mice = mice_config_path(path)
    conf = mice if mice is not None else Path(path).expanduser() / "config.json"
    try:
        data = json.loads(conf.read_text())
    except (OSError, ValueError):
        return None
    value = data.get("num_layers" if mice is not None else "num_hidden_layers")
    return int(value) if isinstance(value, int) and value > 0 else None


def load_scorer(
    name: str | None,
    *,
    max_length: int | None = None,
    device: str | None = None,
    attention: bool = False,
    what: str = "--max-length",
    max_query_length: int | None = None,
) -> Scorer:
    """The scorer a model name (``None`` → ``$MICE_MODEL`` or ``reference``), folder or hub id names.

    ``max_length`` applies to a cross-encoder only (a MICE or late-interaction model's own configuration sets
    its lengths): giving one for another kind is refused in one line naming ``what`` (the option).
    """
    path = resolve_model(name)
    kind = model_kind(path)
    if kind != CROSS_ENCODER and max_query_length is not None:
        raise BadInput(
            f"--max-query-length {max_query_length} does not apply to {path!r}: only a cross-encoder "
            "cuts the query to a budget (a MICE or late-interaction model's own configuration sets it)"
        )
    if kind in (MICE, LATE) and max_length is not None:
        holder = "its mice.json" if kind == MICE else f"its {LATE_CONFIG}"
        model = "MICE model" if kind == MICE else "late-interaction model"
        raise BadInput(
            f"{what} {max_length} does not apply to the {model} {path!r}: {holder} sets the query "
            "and document lengths"
        )
    with quiet_transformers():
        if kind == MICE:
            config = mice_config_path(path)
            return (
                MiceCrossEncoder.load(config, device=device)
                if attention
                else MiceModel.load(config, device=device)
            )
        if kind == LATE:
            if attention:
                raise BadInput(
                    f"{path!r} is a late-interaction model (MaxSim / LITE): it has no query-document "
                    "attention to capture or mask; give a cross-encoder or a MICE model"
                )
            return LateInteractionScorer.load(path, device=device)
        if kind == BI_ENCODER:
            if attention:
                raise BadInput(
                    f"{path!r} is a sentence-transformers bi-encoder: query and document never attend to "
                    "each other; give a cross-encoder or a MICE model"
                )
            return BiEncoder(path, **({"max_length": max_length} if max_length else {}))
        ce = CrossEncoder.from_pretrained(path, max_length=max_length, device=device)
        ce.set_max_query_length(max_query_length)
        ce.query_limit  # noqa: B018 - an explicit length that leaves no room for the document is refused now
        return ce


def load_cross_encoder(
    name: str | None,
    *,
    max_length: int | None = None,
    device: str | None = None,
    what: str = "--max-length",
    max_query_length: int | None = None,
) -> CrossEncoder:
    """:func:`load_scorer` for the attention tools: a :class:`~probe.model.CrossEncoder` surface."""
    return load_scorer(
        name,
        max_length=max_length,
        device=device,
        attention=True,
        what=what,
        max_query_length=max_query_length,
    )


def run_label(scorer: Scorer) -> str:
    """The run tag of a scorer's results: ``cross-encoder``, ``mice``, ``maxsim``, ``lite`` or
    ``bi-encoder``."""
    if isinstance(scorer, (MiceModel, MiceCrossEncoder)):
        return MICE
    if isinstance(scorer, BiEncoder):
        return BI_ENCODER
    if isinstance(scorer, LateInteractionScorer):
        return scorer.module.kind
    return CROSS_ENCODER
