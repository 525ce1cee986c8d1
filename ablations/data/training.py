"""Training groups for the cross-encoder trainer, built from the real collections only.

A *group* is one query with ``n`` documents: labels (graded relevance) and/or teacher scores.

- :func:`distillation_groups` — the training collections' queries with their BM25 candidates and judged
  passages, plus MS MARCO dev-small queries with bm25s candidates retrieved from the *training*
  collections' passage pools, scored by a teacher. No test-collection passage is ever used.
- :func:`pseudo_query_groups` — GPL-style groups: a span cropped from a training-pool passage is the query,
  that passage and bm25s hard negatives from the same pool its candidates, scored by the teacher.
- :func:`judged_groups` — one positive (grade ≥ ``min_positive``) and BM25 hard negatives (judged 0,
  preferring those in the BM25 top-100) per group, from the training collections' judged pairs.
- :func:`validation_set` — held-out training-collection queries re-ranked on their BM25 top-``depth``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from bm25s.stopwords import STOPWORDS_EN

from ablations.data import readers
from ablations.data.bm25 import BM25Index
from ablations.data.collections import RerankSet, judged_texts, load_collection, pooled_passages
from ablations.data.teacher_cache import TeacherCache
from ablations.paths import data_dir
from probe.errors import BadInput


@dataclass
class Group:
    query: str
    docs: list[str]
    labels: list[float] = field(default_factory=list)
    teacher: list[float] = field(default_factory=list)


def split_queries(qids, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic (train, held-out) split of query ids."""
    qids = sorted(qids)
    rng = random.Random(seed)
    held = set(rng.sample(qids, max(1, round(len(qids) * fraction))))
    return [q for q in qids if q not in held], sorted(held)


def dev_small_queries() -> dict[str, str]:
    return readers.read_tsv_queries(
        data_dir() / "msmarco-passage-dev-small" / "topics.msmarco-passage.dev-subset.txt"
    )


def test_passages(test_collections: list[str]) -> tuple[set[str], set[str]]:
    """Ids and exact texts of every passage a test collection ships: never used in training."""
    ids: set[str] = set()
    texts: set[str] = set()
    for name in test_collections:
        try:
            docs = pooled_passages(name)
        except BadInput:  # not a TREC DL collection: its corpus is the candidate documents
            docs = load_collection(name).docs
        ids.update(docs)
        texts.update(docs.values())
    return ids, texts


def _without(docs: dict[str, str], excluded: tuple[set[str], set[str]]) -> dict[str, str]:
    ids, texts = excluded
    return {k: v for k, v in docs.items() if k not in ids and v not in texts}


def distillation_groups(
    train_collections: list[str],
    *,
    exclude_queries: set[str],
    exclude_docs: tuple[set[str], set[str]] = (set(), set()),
    dev_queries: int,
    groups_per_query: int,
    group_size: int,
    depth: int,
    seed: int,
    teacher=None,
    teacher_cache: str | Path | None = None,
    progress: bool = True,
    record: dict | None = None,
) -> list[Group]:
    """Candidate groups scored by ``teacher``, from two sources:

    - in-domain: every (not held-out) query of the training collections with its shipped BM25 top-100
      plus its judged passages that have text; ``groups_per_query`` random groups per query, so the
      student sees relevant passages and real hard negatives in many contrasts;
    - MS MARCO dev-small: ``dev_queries`` queries with bm25s top-``depth`` candidates from the training
      collections' passage pools, one group each (query diversity).

    Teacher scores are computed once and cached (:class:`~ablations.data.teacher_cache.TeacherCache`:
    under ``$MICE_CACHE/teacher`` or at ``teacher_cache``), keyed by the teacher (its fingerprint and max
    length) and every data setting, so a resumed or repeated run, and every other student distilling the
    same teacher on the same data, reads them back; scoring resumes chunk by chunk after an interruption.
    ``record``, when given, receives the cache's path, its row count, the rows this call scored and the
    seconds it took (0 when everything was read back).
    """
    docs: dict[str, str] = {}
    queries: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    for name in train_collections:
        pool = _without(pooled_passages(name), exclude_docs)
        docs.update(pool)
        rs = load_collection(name)
        judged = rs.qrels[rs.qrels["doc_id"].isin(pool.keys())].groupby("query_id")["doc_id"].agg(list)
        cands = (
            rs.candidates[rs.candidates["doc_id"].isin(pool.keys())].groupby("query_id")["doc_id"].agg(list)
        )
        for q, text in rs.queries.items():
            if f"{name}:{q}" not in exclude_queries:
                queries[f"{name}:{q}"] = text
                lists[f"{name}:{q}"] = list(dict.fromkeys(cands.get(q, []) + judged.get(q, [])))
    dev = dev_small_queries()
    dev_ids = random.Random(seed).sample(sorted(dev), min(len(dev), dev_queries))
    key = {
        "collections": train_collections,
        "in_domain": sorted(queries),
        "dev": sorted(dev_ids),
        "groups_per_query": groups_per_query,
        "group_size": group_size,
        "depth": depth,
        "seed": seed,
        "teacher": getattr(teacher, "name", "none"),
        "teacher_max_length": getattr(teacher, "max_length", None),
        "docs": len(docs),
        "excluded": len(exclude_docs[0]),
    }
    queries.update({f"dev:{q}": dev[q] for q in dev_ids})

    def build() -> pd.DataFrame:
        if dev_ids:
            run = BM25Index(docs).search({f"dev:{q}": dev[q] for q in dev_ids}, k=depth)
            lists.update(run.groupby("query_id")["doc_id"].agg(list).to_dict())
        rows = []
        for qid in sorted(lists):
            ids = lists[qid]
            if len(ids) < group_size:
                continue
            for g in range(1 if qid.startswith("dev:") else groups_per_query):
                rng = random.Random(f"{seed}:{qid}:{g}")
                rows.extend((qid, g, d) for d in rng.sample(ids, group_size))
        return pd.DataFrame(rows, columns=["query_id", "group", "doc_id"])

    if record is not None:
        record.update(teacher=key["teacher"], teacher_max_length=key["teacher_max_length"])
    return _teacher_scored(
        TeacherCache(key, teacher_cache), build, queries, docs, teacher, progress=progress, record=record
    )


def _teacher_scored(
    cache: TeacherCache,
    build,
    queries: dict[str, str],
    docs: dict[str, str],
    teacher,
    *,
    progress: bool,
    record: dict | None,
    prefix: str = "",
) -> list[Group]:
    """The groups of ``build()``'s (query_id, group, doc_id) rows with their teacher scores, read from
    ``cache`` or computed now; ``record`` receives the cache's path, row count, rows scored and seconds
    (each name after ``prefix``)."""
    cached = cache.load()  # verified once (size, SHA-256, rows); a damaged file is reported and recomputed
    if teacher is None and cached is None:
        raise BadInput("distillation needs a teacher")

    def score(rows: pd.DataFrame):
        return teacher.score_ids(list(zip(rows["query_id"], rows["doc_id"])), queries, docs, progress=False)

    table = cache.get(build, score, progress=progress)  # the verified table, or computed now
    if record is not None:
        manifest = cache.manifest() or {}
        had = cached is not None
        record.update(
            {
                f"{prefix}cache": str(cache.path),
                f"{prefix}rows": len(table),
                f"{prefix}scored_rows": 0 if had else manifest.get("scored_rows"),
                f"{prefix}score_seconds": 0.0 if had else manifest.get("score_seconds"),
            }
        )
    return [
        Group(queries[qid], [docs[d] for d in g["doc_id"]], teacher=g["teacher"].tolist())
        for (qid, _), g in table.groupby(["query_id", "group"], sort=True)
    ]


_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_EDGE = re.compile(r"^\W+|\W+$")


def crop_query(
    text: str,
    rng: random.Random,
    min_words: int = 4,
    max_words: int = 8,
    content_words: int = 3,
    tries: int = 8,
) -> str | None:
    """A query cropped from a passage: ``min_words``..``max_words`` consecutive words of one of its
    sentences (a random one with at least ``min_words`` words), lower-cased, edge punctuation stripped,
    with at least ``content_words`` words outside bm25s' English stopwords (up to ``tries`` crops);
    ``None`` when no crop qualifies. Random cropping is Contriever's unsupervised query; here the teacher,
    not the crop, says which candidates are relevant (GPL's pseudo-labelling)."""
    sentences = [s.split() for s in _SENTENCE.split(text)]
    sentences = [w for w in sentences if len(w) >= min_words]
    for _ in range(tries if sentences else 0):
        words = rng.choice(sentences)
        n = rng.randint(min_words, min(max_words, len(words)))
        start = rng.randint(0, len(words) - n)
        query = " ".join(" ".join(_EDGE.sub("", w) for w in words[start : start + n]).lower().split())
        if sum(w not in STOPWORDS_EN for w in query.split()) >= content_words:
            return query
    return None


def training_pool(train_collections: list[str], exclude_docs: tuple[set[str], set[str]]) -> dict[str, str]:
    """The training collections' pooled passages, without any excluded (test) passage id or text."""
    docs: dict[str, str] = {}
    for name in train_collections:
        docs.update(_without(pooled_passages(name), exclude_docs))
    return docs


def pseudo_query_groups(
    train_collections: list[str],
    *,
    passages: int,
    exclude_docs: tuple[set[str], set[str]] = (set(), set()),
    group_size: int,
    depth: int,
    seed: int,
    teacher=None,
    teacher_cache: str | Path | None = None,
    progress: bool = True,
    record: dict | None = None,
) -> list[Group]:
    """``passages`` groups whose query is cropped from a training-pool passage (:func:`crop_query`): the
    passage itself and ``group_size - 1`` of the query's bm25s top-``depth`` over the same pool, scored by
    ``teacher`` (margin-MSE or KL targets; nothing assumes the source passage is relevant).

    Why: MS MARCO dev-small's relevant passages are not in these pools, so the dev-small groups of
    :func:`distillation_groups` rarely hold a passage the teacher finds relevant; these groups do, for
    as many distinct queries as there are passages. Cached like :func:`distillation_groups` (its own key;
    beside ``teacher_cache`` as ``<stem>.pseudo.parquet`` when that is given).
    """
    if isinstance(passages, bool) or not isinstance(passages, int) or passages < 0:
        raise BadInput(f"--pseudo-queries {passages!r}: expected a whole number >= 0")
    docs = training_pool(train_collections, exclude_docs)
    rng = random.Random(f"{seed}:pseudo")
    sources = rng.sample(sorted(docs), min(passages, len(docs)))
    queries = {}
    for d in sources:
        q = crop_query(docs[d], random.Random(f"{seed}:crop:{d}"))
        if q:
            queries[f"pseudo:{d}"] = q
    key = {
        "kind": "pseudo-queries",
        "collections": train_collections,
        "passages": passages,
        "group_size": group_size,
        "depth": depth,
        "seed": seed,
        "teacher": getattr(teacher, "name", "none"),
        "teacher_max_length": getattr(teacher, "max_length", None),
        "docs": len(docs),
        "excluded": len(exclude_docs[0]),
    }
    path = (
        None
        if teacher_cache is None
        else Path(teacher_cache).with_name(Path(teacher_cache).stem + ".pseudo.parquet")
    )

    def build() -> pd.DataFrame:
        run = BM25Index(docs).search(queries, k=depth) if queries else None
        hits = {} if run is None else run.groupby("query_id")["doc_id"].agg(list).to_dict()
        rows = []
        for qid in sorted(queries):
            source = qid.split(":", 1)[1]
            seen = {docs[source]}  # the pools hold some passages twice under two ids: one of each text
            others = [d for d in hits.get(qid, []) if not (docs[d] in seen or seen.add(docs[d]))]
            if len(others) < group_size - 1:
                continue
            picked = random.Random(f"{seed}:{qid}").sample(others, group_size - 1)
            rows.extend((qid, 0, d) for d in [source, *picked])
        return pd.DataFrame(rows, columns=["query_id", "group", "doc_id"])

    return _teacher_scored(
        TeacherCache(key, path),
        build,
        queries,
        docs,
        teacher,
        progress=progress,
        record=record,
        prefix="pseudo_",
    )


def judged_groups(
    train_collections: list[str],
    *,
    exclude_queries: set[str],
    group_size: int,
    min_positive: int,
    seed: int,
    exclude_docs: tuple[set[str], set[str]] = (set(), set()),
) -> list[Group]:
    """One group per positive judged pair: the positive plus ``group_size - 1`` judged-0 hard negatives."""
    groups = []
    for name in train_collections:
        queries, qrels, docs = judged_texts(name)
        docs = _without(docs, exclude_docs)
        qrels = qrels[qrels["doc_id"].isin(docs.keys())]
        bm25 = load_collection(name).candidates
        in_bm25 = set(zip(bm25["query_id"], bm25["doc_id"]))
        for qid, judged in qrels.groupby("query_id", sort=True):
            if f"{name}:{qid}" in exclude_queries:
                continue
            pos = judged[judged["relevance"] >= min_positive]
            neg = judged[judged["relevance"] == 0]["doc_id"].tolist()
            hard = [d for d in neg if (qid, d) in in_bm25]
            pool = hard if len(hard) >= group_size - 1 else neg
            if len(pool) < group_size - 1:
                continue
            for pid, rel in zip(pos["doc_id"], pos["relevance"]):
                negs = random.Random(f"{seed}:{name}:{qid}:{pid}").sample(pool, group_size - 1)
                groups.append(
                    Group(
                        queries[qid],
                        [docs[pid]] + [docs[d] for d in negs],
                        labels=[float(rel)] + [0.0] * (group_size - 1),
                    )
                )
    return groups


def validation_set(collection: str, held_out: list[str], depth: int) -> RerankSet:
    """The held-out queries of a training collection, their BM25 top-``depth`` candidates."""
    rs = load_collection(collection)
    keep = {q.split(":", 1)[1] for q in held_out if q.startswith(f"{collection}:")}
    cand = rs.candidates[rs.candidates["query_id"].isin(keep) & (rs.candidates["rank"] <= depth)]
    return RerankSet(
        f"{collection}-validation",
        {q: rs.queries[q] for q in keep},
        rs.docs,
        cand.reset_index(drop=True),
        rs.qrels[rs.qrels["query_id"].isin(keep)],
        rs.measures,
        rs.source,
    )


def batches(groups: list[Group], groups_per_step: int, seed: int, epoch: int) -> list[list[Group]]:
    """The step-ordered batches of one epoch (a deterministic shuffle, so a resumed run sees the same
    order)."""
    order = list(range(len(groups)))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return [
        [groups[i] for i in order[s : s + groups_per_step]]
        for s in range(0, len(order) - groups_per_step + 1, groups_per_step)
    ]


def as_arrays(batch: list[Group], key: str) -> np.ndarray:
    return np.array([getattr(g, key) for g in batch], dtype=np.float32)
