"""Rerank sets: queries + candidate documents with text + qrels, from the real collections.

A collection is named by a short string, parsed once into a :class:`RerankSet`:

=========  ==================================  =====================================================
name       also accepted                        what
=========  ==================================  =====================================================
dl19       msmarco-passage/trec-dl-2019/judged  TREC DL 2019 passage, 43 judged queries, BM25 top-100
dl20       msmarco-passage/trec-dl-2020/judged  TREC DL 2020 passage, 54 judged queries, BM25 top-100
dl21       msmarco-passage-v2/trec-dl-2021/judged  TREC DL 2021 passage (MS MARCO v2), 53 judged queries
scifact    beir/scifact/test                    BEIR SciFact test, 300 queries, bm25s top-100
PATH       a BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/test.tsv); bm25s top-100 candidates
irds:ID    an ir_datasets id (needs ir_datasets installed and the network)
=========  ==================================  =====================================================

Files are read from ``$MICE_SHARED/data`` (see :mod:`ablations.paths`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ablations.data import readers
from ablations.data.bm25 import bm25_run
from ablations.paths import data_dir
from probe.errors import BadInput

DL_MEASURES = ("nDCG@10", "RR(rel=2)@10", "R(rel=2)@100")
BEIR_MEASURES = ("nDCG@10", "RR@10", "R@100")


@dataclass
class RerankSet:
    """Queries, candidate documents with text, and qrels. Tables use ir_measures column names."""

    name: str
    queries: dict[str, str]
    docs: dict[str, str]
    candidates: pd.DataFrame  # query_id, doc_id, rank, score (first stage)
    qrels: pd.DataFrame  # query_id, doc_id, relevance
    measures: tuple[str, ...] = DL_MEASURES
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.candidates = self.candidates.astype({"query_id": str, "doc_id": str})
        self.qrels = self.qrels.astype({"query_id": str, "doc_id": str})
        unknown = set(self.qrels["query_id"]) - set(self.queries)
        if unknown and not (set(self.qrels["query_id"]) & set(self.queries)):
            raise BadInput(f"{self.name}: no qrels query id matches a query (e.g. {sorted(unknown)[0]!r})")
        # Only judged queries are re-ranked and evaluated.
        judged = set(self.qrels["query_id"]) & set(self.queries)
        self.queries = {q: t for q, t in self.queries.items() if q in judged}
        self.candidates = self.candidates[self.candidates["query_id"].isin(judged)].reset_index(drop=True)
        self.qrels = self.qrels[self.qrels["query_id"].isin(judged)].reset_index(drop=True)
        missing = set(self.candidates["doc_id"]) - set(self.docs)
        if missing:
            raise BadInput(
                f"{self.name}: candidate document {sorted(missing)[0]!r} has no text "
                f"({len(missing)} such documents)"
            )
        empty = [d for d in self.candidates["doc_id"].unique() if not str(self.docs[d]).strip()]
        if empty:
            raise BadInput(
                f"{self.name}: document {empty[0]!r} is empty ({len(empty)} empty candidate documents)"
            )

    @property
    def query_ids(self) -> list[str]:
        return sorted(self.candidates["query_id"].unique(), key=_natural)

    def subset(self, n_queries: int | None = None, depth: int | None = None) -> RerankSet:
        """The first ``n_queries`` queries (sorted by id) and the top-``depth`` candidates of each."""
        if n_queries is not None and n_queries < 1:
            raise BadInput(f"--queries {n_queries} must be >= 1")
        if depth is not None and depth < 1:
            raise BadInput(f"--depth {depth} must be >= 1")
        keep = set(self.query_ids[:n_queries] if n_queries else self.query_ids)
        cand = self.candidates[self.candidates["query_id"].isin(keep)]
        if depth:
            cand = cand[cand["rank"] <= depth]
        return RerankSet(
            self.name,
            {q: t for q, t in self.queries.items() if q in keep},
            self.docs,
            cand.reset_index(drop=True),
            self.qrels[self.qrels["query_id"].isin(keep)],
            self.measures,
            self.source,
            self.extra,
        )

    def pairs(self) -> list[tuple[str, str]]:
        """``(query text, document text)`` for every candidate row, in ``candidates`` order."""
        return [
            (self.queries[q], self.docs[d])
            for q, d in zip(self.candidates["query_id"], self.candidates["doc_id"])
        ]

    def run_from_scores(self, scores) -> pd.DataFrame:
        run = self.candidates[["query_id", "doc_id"]].copy()
        run["score"] = pd.Series(scores, dtype=float).to_numpy()
        return run

    def first_stage_run(self) -> pd.DataFrame:
        """The candidates' own ranking (the first stage, BM25 here) as a run: scored by rank, so ties keep
        its order."""
        return self.run_from_scores(-self.candidates["rank"].to_numpy(dtype=float))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "queries": len(self.queries),
            "candidates": len(self.candidates),
            "judged_pairs": len(self.qrels),
            "source": self.source,
        }


def _natural(qid: str):
    return (0, int(qid), "") if qid.isdigit() else (1, 0, qid)


# ---------------------------------------------------------------- named collections
def _dl(folder: str, queries_file: str, qrels_file: str, name: str) -> RerankSet:
    root = data_dir() / folder
    cand, cand_queries, cand_docs = readers.read_top1000_tsv(root / "bm25-top100.tsv.gz")
    queries = readers.read_tsv_queries(root / queries_file)
    qrels = readers.read_trec_qrels(root / qrels_file)
    return RerankSet(name, queries, cand_docs, cand, qrels, DL_MEASURES, str(root))


def _beir(root: Path, name: str, split: str = "test", depth: int = 100) -> RerankSet:
    corpus_file = root / "corpus.jsonl.gz" if (root / "corpus.jsonl.gz").exists() else root / "corpus.jsonl"
    docs = readers.read_beir_corpus(corpus_file)
    queries = readers.read_beir_queries(root / "queries.jsonl")
    qrels = readers.read_beir_qrels(root / "qrels" / f"{split}.tsv")
    judged = {q: queries[q] for q in qrels["query_id"].unique() if q in queries}
    if not judged:
        raise BadInput(f"{root}: no qrels query id matches a query in queries.jsonl")
    cand = bm25_run(judged, docs, k=depth)
    return RerankSet(name, judged, docs, cand, qrels, BEIR_MEASURES, f"{root} (bm25s top-{depth})")


COLLECTIONS = {
    "dl19": lambda: _dl(
        "trec-dl-2019-passage", "msmarco-test2019-queries-judged.tsv", "2019qrels-pass.txt", "dl19"
    ),
    "dl20": lambda: _dl("trec-dl-2020-passage", "msmarco-test2020-queries.tsv", "2020qrels-pass.txt", "dl20"),
    "dl21": lambda: _dl("trec-dl-2021-passage", "topics.dl21.txt", "qrels.dl21-passage.txt", "dl21"),
    "scifact": lambda: _beir(data_dir() / "beir" / "scifact", "scifact"),
}
ALIASES = {
    "msmarco-passage/trec-dl-2019/judged": "dl19",
    "msmarco-passage/trec-dl-2020/judged": "dl20",
    "msmarco-passage-v2/trec-dl-2021/judged": "dl21",
    "beir/scifact/test": "scifact",
}


def load_collection(name: str) -> RerankSet:
    """Parse a collection name (see the module docstring) into a :class:`RerankSet`."""
    key = ALIASES.get(name, name)
    if key in COLLECTIONS:
        return COLLECTIONS[key]()
    if name.startswith("irds:"):
        return _irds(name[5:])
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "queries.jsonl").exists():
            return _beir(path, path.name)
        raise BadInput(
            f"folder {name!r} is not a BEIR collection (corpus.jsonl[.gz], queries.jsonl, qrels/test.tsv)"
        )
    raise BadInput(
        f"unknown collection {name!r}; expected one of {', '.join(COLLECTIONS)}, "
        f"{', '.join(ALIASES)}, a BEIR folder, or irds:<ir_datasets id>"
    )


def _irds(dataset_id: str) -> RerankSet:  # pragma: no cover - needs the network
    try:
        import ir_datasets
    except ImportError:
        raise BadInput(
            f"collection irds:{dataset_id} needs ir_datasets (`pip install ir_datasets`)"
        ) from None
    try:
        ds = ir_datasets.load(dataset_id)
        queries = {q.query_id: q.text for q in ds.queries_iter()}
        qrels = pd.DataFrame(
            [(q.query_id, q.doc_id, q.relevance) for q in ds.qrels_iter()],
            columns=["query_id", "doc_id", "relevance"],
        )
        docs = {d.doc_id: d.default_text() for d in ds.docs_iter()}
    except Exception as exc:
        raise BadInput(f"cannot load ir_datasets id {dataset_id!r}: {exc}") from None
    if ds.has_scoreddocs():
        cand = pd.DataFrame(
            [(s.query_id, s.doc_id, s.score) for s in ds.scoreddocs_iter()],
            columns=["query_id", "doc_id", "score"],
        )
        cand["rank"] = cand.groupby("query_id")["score"].rank(ascending=False, method="first").astype(int)
        cand = cand[cand["rank"] <= 100]
    else:
        cand = bm25_run({q: queries[q] for q in qrels["query_id"].unique() if q in queries}, docs, k=100)
    return RerankSet(dataset_id, queries, docs, cand, qrels, BEIR_MEASURES, f"ir_datasets:{dataset_id}")


def pooled_passages(name: str) -> dict[str, str]:
    """All passage texts shipped with a TREC DL collection (its pool plus the BM25 candidates)."""
    key = ALIASES.get(name, name)
    folders = {"dl19": "trec-dl-2019-passage", "dl20": "trec-dl-2020-passage", "dl21": "trec-dl-2021-passage"}
    if key not in folders:
        raise BadInput(f"collection {name!r} has no passage pool; expected one of {', '.join(folders)}")
    root = data_dir() / folders[key]
    pool = (
        readers.read_jsonl_passages(root / "passages.jsonl.gz")
        if key == "dl21"
        else readers.read_tsv_passages(root / "passages.tsv.gz")
    )
    _, _, cand_docs = readers.read_top1000_tsv(root / "bm25-top100.tsv.gz")
    return {**cand_docs, **pool}


def judged_texts(name: str) -> tuple[dict[str, str], pd.DataFrame, dict[str, str]]:
    """Queries, qrels restricted to pairs with text, and passage texts of a TREC DL collection (training
    use)."""
    rs = load_collection(name)
    docs = pooled_passages(name)
    qrels = rs.qrels[rs.qrels["doc_id"].isin(docs.keys())].reset_index(drop=True)
    return rs.queries, qrels, docs
