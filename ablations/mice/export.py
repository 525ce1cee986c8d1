"""The library behind ``python -m ablations.export``: a MICE configuration from a preset, a search result, a
mask spec or another configuration (:func:`load_source`, :func:`export`), and its document-state index
(:func:`build_collection_index`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ablations.masking.masks import MaskSpec
from ablations.mice.config import MiceConfig, doc_budget, preset, preset_names
from ablations.mice.plan import Plan, compile_plan
from ablations.paths import resolve_model
from probe.errors import BadInput
from probe.model import DEFAULT_MAX_LENGTH


def model_shape(model: str) -> tuple[int, int]:
    """``(layers, heads)`` of a model folder or name, from its config alone."""
    from transformers import AutoConfig

    path = resolve_model(model)
    try:
        conf = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise BadInput(
            f"cannot read the configuration of model {model!r} ({path}): {str(exc).splitlines()[0]}"
        ) from None
    return int(conf.num_hidden_layers), int(conf.num_attention_heads)


def model_max_length(model: str) -> int:
    """The pair budget the cross-encoder scores with by default (its saved ``max_seq_length``, at most
    256)."""
    conf = Path(resolve_model(model)) / "sentence_bert_config.json"
    try:
        return min(DEFAULT_MAX_LENGTH, int(json.loads(conf.read_text())["max_seq_length"]))
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_MAX_LENGTH


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"{str(path)!r} is not a readable JSON file: {exc}") from None


def load_source(source: str, model: str, overrides: dict) -> MiceConfig:
    """A configuration from ``--from`` (see the module docstring) with ``overrides`` applied."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    path = Path(source)

    def fresh() -> dict:  # a new configuration matches the model's own length budget
        out = dict(overrides)
        out.setdefault("max_length", model_max_length(model))
        out.setdefault("max_doc_length", doc_budget(out["max_length"]))
        return out

    if path.is_dir():
        for name in ("search.json", "mice.json"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise BadInput(
                f"folder {source!r} holds neither search.json (python -m ablations.search) nor mice.json"
            )
    if not path.is_file():
        if source.strip().lower().startswith("mice-"):
            layers, heads = model_shape(model)
            return preset(source, layers, heads, model, **fresh())
        raise BadInput(f"--from {source!r} is neither a file, a folder nor a preset ({preset_names()})")
    data = _read_json(path)
    if isinstance(data, dict) and data.get("kind") == "mice-config":
        cfg = MiceConfig.from_dict(data, where=f"MICE config {str(path)!r}")
        if not overrides:
            return cfg
        fields = {k: v for k, v in cfg.to_dict().items() if k not in ("kind", "interactions")}
        return MiceConfig.from_dict({**fields, **overrides, "plan": overrides.get("plan")})
    if isinstance(data, dict) and "removed" in data:  # ablations.search output
        spec = MaskSpec.from_dict(data["removed"])
        src = {
            "from": str(path),
            "search": {
                k: data.get(k)
                for k in ("measure", "tolerance", "alpha", "strategy", "final", "removed_label")
            },
        }
    elif isinstance(data, dict) and "rules" in data:
        spec = MaskSpec.from_dict(data)
        src = {"from": str(path)}
    else:
        raise BadInput(
            f'{str(path)!r} is not a search result (search.json), a mask spec ({{"rules": ...}}) or a '
            "MICE configuration"
        )
    layers, heads = model_shape(model)
    return MiceConfig(base_model=model, num_layers=layers, num_heads=heads, mask=spec, source=src, **fresh())


def export(source: str, model: str, overrides: dict) -> tuple[MiceConfig, Plan]:
    """The MICE configuration ``source`` names, resolved against ``model`` (``overrides``: fields to set,
    ``None`` = keep), with its execution plan chosen (``overrides["plan"]``, else the cheapest exact one).
    A configuration whose score cannot read the document is refused in one line."""
    cfg = load_source(source, model, overrides)
    if not cfg.score_reads_document():
        raise BadInput(
            f"MICE configuration {cfg.label}: the score cannot depend on the document (no document "
            f"information reaches CLS within the kept layers 0-{cfg.drop_layer - 1}); keep at least two "
            "layers from the first query-document interaction (mice-lK+N needs N >= 2), or a later "
            "--drop-layer"
        )
    plan = compile_plan(cfg, overrides.get("plan"))
    cfg.plan = plan.shape
    return cfg, plan


def build_collection_index(
    config: MiceConfig | str | Path,
    collection: str,
    target: Path | None = None,
    *,
    folder: Path | None = None,
    queries: int | None = None,
    depth: int | None = None,
    progress: bool = True,
):
    """The document-state index of ``collection``'s candidates under ``config`` (doc-cache plans), written to
    ``target`` (default ``<folder>/doc-states-<collection>.safetensors``); returns ``(path, index)``."""
    from ablations.data.collections import load_collection
    from ablations.mice.model import MiceModel

    model = MiceModel.load(config)
    rs = load_collection(collection).subset(queries, depth)
    target = target or (folder or Path()) / f"doc-states-{rs.name}.safetensors"
    return target, model.build_index([rs.docs[d] for d in rs.candidates["doc_id"]], target, progress=progress)
