"""Re-rank a collection with a scorer and evaluate the runs: the library behind ``python -m
ablations.evaluate``.

:func:`rerank` scores every candidate of a rerank set; :func:`evaluate_models` re-ranks one or more
collections with one or more scorers, writes BM25's and every scorer's TREC runs and the tidy ``metrics``
table (parquet + JSON manifest, :mod:`ablations.results`) and returns the table; :func:`evaluate_model` is
the one-scorer case.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ablations.data.collections import RerankSet, load_collection
from ablations.data.readers import write_trec_run
from ablations.evaluation.measures import evaluate_runs
from ablations.results import manifest, write_table
from probe.model import Scorer


def rerank(scorer: Scorer, rs: RerankSet, *, batch_size: int = 32, progress: bool = True) -> pd.DataFrame:
    """Score every candidate; a run table ``query_id, doc_id, score``."""
    return rs.run_from_scores(scorer.score(rs.pairs(), batch_size=batch_size, progress=progress))


def evaluate_model(
    scorer: Scorer,
    label: str,
    collections: Sequence[str],
    out: Path,
    *,
    model: str,
    **kw,
) -> pd.DataFrame:
    """Re-rank each collection's first-stage candidates with ``scorer`` (run tag ``label``) beside BM25's own
    ranking; write ``<out>/<collection>.<run>.trec`` and ``<out>/metrics.parquet`` (+ manifest)."""
    return evaluate_models({label: scorer}, collections, out, models={label: model}, **kw)


def evaluate_models(
    scorers: dict[str, Scorer],
    collections: Sequence[str],
    out: Path,
    *,
    models: dict[str, str],
    queries: int | None = None,
    depth: int | None = None,
    batch_size: int = 32,
    settings: dict | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Re-rank each collection's first-stage candidates with every scorer (run tag = its key) beside BM25's
    own ranking; write ``<out>/<collection>.<run>.trec`` and ``<out>/metrics.parquet`` (+ manifest, with
    ``models``: run tag -> model path).

    Every collection is loaded before anything is scored or written: a bad one leaves no half-written
    output."""
    if "bm25" in scorers:
        raise ValueError("the run tag 'bm25' is BM25's own")
    sets = [load_collection(name).subset(queries, depth) for name in collections]  # every input checked first
    tables, timings, described = [], {}, []
    for rs in sets:
        described.append(rs.describe())
        runs = {"bm25": rs.candidates[["query_id", "doc_id", "score"]]}
        for label, scorer in scorers.items():
            start = time.perf_counter()
            runs[label] = rerank(scorer, rs, batch_size=batch_size, progress=progress)
            timings.setdefault(rs.name, {})[label] = {
                "seconds": round(time.perf_counter() - start, 2),
                "pairs": len(runs[label]),
            }
        for tag, r in runs.items():
            write_trec_run(r, out / f"{rs.name}.{tag}.trec", tag)
        tables.append(evaluate_runs(runs, rs))
    table = pd.concat(tables, ignore_index=True)
    first = next(iter(models.values()))
    meta = manifest(
        kind="evaluate",
        model=first,
        models=models,
        collections=described,
        settings=settings or {},
        timings=timings,
    )
    write_table(table, out, "metrics", meta)
    return table
