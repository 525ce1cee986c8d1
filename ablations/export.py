"""Export a MICE configuration (mice.json) from a mask: a search result, a mask spec, a preset or a config.

    python -m ablations.export --from mice-l2+3 --out mice.json                 # the paper's final architecture
    python -m ablations.export --from results/ablations/search --out mice.json  # the surviving mask of a search
    python -m ablations.export --from spec.json --merge-layer 2 --drop-layer 5 --out mice.json
    python -m ablations.export --from mice.json --index dl19 --index-out doc-states.safetensors

``--from`` is one of: a preset (``mice-step0`` … ``mice-step3@K``, ``mice-lK+N``), a folder holding
``search.json`` or the file itself (``python -m ablations.search``: its removed set), a mask-spec JSON
(``{"rules": [...]}``) or a MICE configuration (options given here override its fields). The model
(``--model``, default the reference cross-encoder) fixes the number of layers and heads; the execution
plan is the cheapest exact one (``--plan`` to choose another valid one). ``--index COLLECTION`` also
computes the document-state index of the collection's candidates (doc-cache plans) and reports its size.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from probe.errors import BadInput, cli
from probe.model import DEFAULT_MAX_LENGTH

from ablations.masking.masks import MaskSpec
from ablations.mice.config import CACHE_DTYPES, POSITIONS, MiceConfig, doc_budget, preset, preset_names
from ablations.paths import resolve_model
from ablations.mice.plan import compile_plan


def model_shape(model: str) -> tuple[int, int]:
    """``(layers, heads)`` of a model folder or name, from its config alone."""
    from transformers import AutoConfig

    path = resolve_model(model)
    try:
        conf = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read the configuration of model {model!r} ({path}): {str(exc).splitlines()[0]}") \
            from None
    return int(conf.num_hidden_layers), int(conf.num_attention_heads)


def model_max_length(model: str) -> int:
    """The pair budget the cross-encoder scores with by default (its saved ``max_seq_length``, at most 256)."""
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
            raise BadInput(f"folder {source!r} holds neither search.json (python -m ablations.search) nor mice.json")
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
        src = {"from": str(path), "search": {k: data.get(k) for k in ("measure", "tolerance", "alpha", "strategy",
                                                                      "final", "removed_label")}}
    elif isinstance(data, dict) and "rules" in data:
        spec = MaskSpec.from_dict(data)
        src = {"from": str(path)}
    else:
        raise BadInput(f"{str(path)!r} is not a search result (search.json), a mask spec ({{\"rules\": ...}}) or a "
                       "MICE configuration")
    layers, heads = model_shape(model)
    return MiceConfig(base_model=model, num_layers=layers, num_heads=heads, mask=spec, source=src, **fresh())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="source", required=True,
                   help="preset, search folder / search.json, mask-spec JSON, or a MICE config")
    p.add_argument("--out", type=Path, default=None, help="where to write the configuration (mice.json)")
    p.add_argument("--model", default="reference", help="base cross-encoder (default: the reference model)")
    p.add_argument("--merge-layer", type=int, default=None,
                   help="no query-document interaction before this layer (default: derived from the mask)")
    p.add_argument("--drop-layer", type=int, default=None, help="layers from this one on are dropped")
    p.add_argument("--positions", choices=POSITIONS, default=None,
                   help="document position ids: canonical (fixed offset, cacheable; default) or joint (as the "
                        "cross-encoder)")
    p.add_argument("--doc-offset", type=int, default=None, help="canonical position of the first document token")
    p.add_argument("--max-length", type=int, default=None,
                   help="pair budget (default: the model's own, e.g. 128 for the reference)")
    p.add_argument("--max-query-length", type=int, default=None, help="canonical: query word pieces kept (64)")
    p.add_argument("--max-doc-length", type=int, default=None,
                   help="canonical: document word pieces kept (default: max length - 10, what a document gets "
                        "after a typical 7-token query)")
    p.add_argument("--plan", default=None, help="masked | split | doc-cache (default: the cheapest exact one)")
    p.add_argument("--cache-dtype", choices=CACHE_DTYPES, default=None)
    p.add_argument("--index", default=None, metavar="COLLECTION",
                   help="also build the document-state index of this collection's candidates")
    p.add_argument("--index-out", type=Path, default=None, help="index file (default: next to --out)")
    p.add_argument("--queries", type=int, default=None, help="index only the first N queries' candidates")
    p.add_argument("--depth", type=int, default=None, help="index only the top-K candidates per query")
    return p


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {"merge_layer": args.merge_layer, "drop_layer": args.drop_layer, "doc_positions": args.positions,
                 "doc_position_offset": args.doc_offset, "max_length": args.max_length,
                 "max_query_length": args.max_query_length, "max_doc_length": args.max_doc_length,
                 "cache_dtype": args.cache_dtype, "plan": args.plan}
    cfg = load_source(args.source, args.model, overrides)
    if not cfg.score_reads_document():
        raise BadInput(f"MICE configuration {cfg.label}: the score cannot depend on the document (no document "
                       f"information reaches CLS within the kept layers 0-{cfg.drop_layer - 1}); keep at least two "
                       "layers from the first query-document interaction (mice-lK+N needs N >= 2), or a later "
                       "--drop-layer")
    plan = compile_plan(cfg, args.plan)
    cfg.plan = plan.shape
    if args.out is None and args.index is None:
        raise BadInput("nothing to do: give --out mice.json (and/or --index COLLECTION)")
    if args.out is not None:
        cfg.save(args.out)
    print(f"MICE configuration: {cfg.label}")
    print(f"plan: {plan.describe()} (valid: {', '.join(plan.valid)})")
    for note in plan.notes:
        print(f"note: {note}")
    for row in cfg.interactions():
        removed = "dropped" if row.get("dropped") else (
            ", ".join(row["removed"]) if "removed" in row else "per head: " + " | ".join(
                ",".join(h) or "-" for h in row["removed_by_head"]))
        print(f"  layer {row['layer']}: {removed or 'nothing removed'}")
    if args.out is not None:
        print(f"wrote {args.out}")
    if args.index is not None:
        from ablations.data.collections import load_collection
        from ablations.mice.model import MiceModel

        model = MiceModel.load(args.out if args.out is not None else cfg)
        rs = load_collection(args.index).subset(args.queries, args.depth)
        target = args.index_out or (args.out.with_name(f"doc-states-{rs.name}.safetensors") if args.out
                                    else Path(f"doc-states-{rs.name}.safetensors"))
        index = model.build_index([rs.docs[d] for d in rs.candidates["doc_id"]], target, progress=True)
        print(f"document-state index: {target}: {index.describe()}")
    return 0


if __name__ == "__main__":
    main()
