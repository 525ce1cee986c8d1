"""Export a MICE configuration (mice.json) from a mask: a search result, a mask spec, a preset or a config.

    python -m ablations.export --from mice-l2+3 --out mice.json                 # the paper's final model
    python -m ablations.export --from results/ablations/search --out mice.json  # a search's survivors
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
from pathlib import Path

from ablations.mice.config import CACHE_DTYPES, POSITIONS
from ablations.mice.export import build_collection_index, export
from ablations.results import check_output_file
from probe.errors import BadInput, cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.export", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        help="preset, search folder / search.json, mask-spec JSON, or a MICE config",
    )
    p.add_argument("--out", type=Path, default=None, help="where to write the configuration (mice.json)")
    p.add_argument("--model", default="reference", help="base cross-encoder (default: the reference model)")
    p.add_argument(
        "--merge-layer",
        type=int,
        default=None,
        help="no query-document interaction before this layer (default: derived from the mask)",
    )
    p.add_argument("--drop-layer", type=int, default=None, help="layers from this one on are dropped")
    p.add_argument(
        "--positions",
        choices=POSITIONS,
        default=None,
        help="document position ids: canonical (fixed offset, cacheable; default) or joint (as the "
        "cross-encoder)",
    )
    p.add_argument(
        "--doc-offset", type=int, default=None, help="canonical position of the first document token"
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="pair budget (default: the model's own, e.g. 128 for the reference)",
    )
    p.add_argument(
        "--max-query-length", type=int, default=None, help="canonical: query word pieces kept (64)"
    )
    p.add_argument(
        "--max-doc-length",
        type=int,
        default=None,
        help="canonical: document word pieces kept (default: max length - 10, what a document gets "
        "after a typical 7-token query)",
    )
    p.add_argument(
        "--plan", default=None, help="masked | split | doc-cache (default: the cheapest exact one)"
    )
    p.add_argument("--cache-dtype", choices=CACHE_DTYPES, default=None)
    p.add_argument(
        "--index",
        default=None,
        metavar="COLLECTION",
        help="also build the document-state index of this collection's candidates",
    )
    p.add_argument("--index-out", type=Path, default=None, help="index file (default: next to --out)")
    p.add_argument("--queries", type=int, default=None, help="index only the first N queries' candidates")
    p.add_argument("--depth", type=int, default=None, help="index only the top-K candidates per query")
    return p


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for value, flag in ((args.out, "--out"), (args.index_out, "--index-out")):
        if value is not None:
            check_output_file(value, flag)
    overrides = {
        "merge_layer": args.merge_layer,
        "drop_layer": args.drop_layer,
        "doc_positions": args.positions,
        "doc_position_offset": args.doc_offset,
        "max_length": args.max_length,
        "max_query_length": args.max_query_length,
        "max_doc_length": args.max_doc_length,
        "cache_dtype": args.cache_dtype,
        "plan": args.plan,
    }
    cfg, plan = export(args.source, args.model, overrides)
    if args.out is None and args.index is None:
        raise BadInput("nothing to do: give --out mice.json (and/or --index COLLECTION)")
    if args.out is not None:
        cfg.save(args.out)
    print(f"MICE configuration: {cfg.label}")
    print(f"plan: {plan.describe()} (valid: {', '.join(plan.valid)})")
    for note in plan.notes:
        print(f"note: {note}")
    for row in cfg.interactions():
        removed = (
            "dropped"
            if row.get("dropped")
            else (
                ", ".join(row["removed"])
                if "removed" in row
                else "per head: " + " | ".join(",".join(h) or "-" for h in row["removed_by_head"])
            )
        )
        print(f"  layer {row['layer']}: {removed or 'nothing removed'}")
    if args.out is not None:
        print(f"wrote {args.out}")
    if args.index is not None:
        target, index = build_collection_index(
            args.out if args.out is not None else cfg,
            args.index,
            args.index_out,
            folder=args.out.parent if args.out else None,
            queries=args.queries,
            depth=args.depth,
        )
        print(f"document-state index: {target}: {index.describe()}")
    return 0


if __name__ == "__main__":
    main()
