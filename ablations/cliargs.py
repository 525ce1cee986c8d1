"""Arguments shared by the ablation CLIs (``run``, ``sweep``, ``search``): model, collection, statistics.

Parsed into :class:`ablations.experiments.runner.Settings` and an
:class:`~ablations.experiments.runner.Experiment`; the library never sees an ``argparse.Namespace``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from probe.errors import BadInput

if TYPE_CHECKING:  # importing these loads torch: the CLIs parse and check their arguments first
    from ablations.experiments.runner import Experiment, Settings
    from probe.model import CrossEncoder

DEFAULT_BOOTSTRAP = 10_000  # = ablations.evaluation.stats.DEFAULT_BOOTSTRAP (tests/test_cli.py checks)
DEFAULT_TIE_TOL = 1e-6  # = ablations.evaluation.stats.DEFAULT_TIE_TOL


def add_max_query_length(p: argparse.ArgumentParser) -> None:
    """``--max-query-length``, the same on every scoring CLI."""
    p.add_argument(
        "--max-query-length",
        type=int,
        default=None,
        help="tokens of a query kept (longer queries are cut, noted on stderr; "
        "default: half of --max-length)",
    )


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="cross-encoder folder, hub id, or 'reference' (default: "
        "$MICE_MODEL or the reference cross-encoder)",
    )
    p.add_argument("--collection", default="dl19", help="collection name or BEIR folder (default dl19)")
    p.add_argument("--queries", type=int, default=None, help="use only the first N queries (sorted by id)")
    p.add_argument("--depth", type=int, default=None, help="re-rank only the top-K first-stage candidates")
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="max tokens per pair (default: the model's own, from its folder, else 256)",
    )
    add_max_query_length(p)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--measures",
        nargs="+",
        default=None,
        help="ir_measures names (default: the collection's, e.g. nDCG@10 RR(rel=2)@10 R(rel=2)@100)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples (default 10000)"
    )
    p.add_argument(
        "--tie-tol",
        type=float,
        default=DEFAULT_TIE_TOL,
        help="|delta| at most this counts as a tie (default 1e-6)",
    )
    p.add_argument("--no-cache", action="store_true", help="recompute the unablated baseline")


def _positive(value: int | None, flag: str, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise BadInput(f"{flag} {value} must be >= {minimum}")


def settings_from_args(args: argparse.Namespace) -> Settings:
    _positive(args.batch_size, "--batch-size")
    _positive(args.bootstrap, "--bootstrap", 100)
    _positive(args.queries, "--queries")
    _positive(args.depth, "--depth")
    if args.tie_tol < 0:
        raise BadInput(f"--tie-tol {args.tie_tol} must be >= 0")
    if args.measures:
        from ablations.evaluation.measures import parse_measures

        parse_measures(args.measures)
    from ablations.experiments.runner import Settings

    return Settings(
        collection=args.collection,
        queries=args.queries,
        depth=args.depth,
        max_length=args.max_length,
        batch_size=args.batch_size,
        seed=args.seed,
        n_boot=args.bootstrap,
        tie_tol=args.tie_tol,
        measures=tuple(args.measures) if args.measures else None,
    )


def load_model(args: argparse.Namespace) -> tuple[CrossEncoder, str]:
    """The cross-encoder named by ``--model`` (default: the reference model) and its resolved path. A MICE
    model (``mice.json`` or a retrained MICE folder) loads as :class:`~ablations.mice.view.MiceCrossEncoder`:
    its masked plan, so removals are added to the MICE mask (:func:`ablations.scorers.load_cross_encoder`)."""
    from ablations.paths import resolve_model
    from ablations.scorers import load_cross_encoder

    model_path = resolve_model(args.model)
    ce = load_cross_encoder(model_path, max_length=args.max_length, max_query_length=args.max_query_length)
    return ce, model_path


def experiment_from_args(
    args: argparse.Namespace, ce: CrossEncoder, model_path: str, *, progress: bool = True, prefix: bool = True
) -> Experiment:
    from ablations.data.collections import load_collection
    from ablations.experiments.runner import Experiment

    settings = settings_from_args(args)
    rs = load_collection(args.collection).subset(args.queries, args.depth)
    return Experiment(
        ce,
        rs,
        settings,
        model_label=model_path,
        progress=progress,
        use_cache=not args.no_cache,
        prefix=prefix,
    )


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress unless ``--no-progress``: a bar on a terminal, periodic lines in a log
    (:mod:`probe.progress`)."""
    return not args.no_progress
