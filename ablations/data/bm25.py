"""First-stage BM25 retrieval with bm25s, for collections that ship no candidate run."""

from __future__ import annotations

import bm25s
import numpy as np
import pandas as pd

# Pyserini's MS MARCO defaults, as used by the shared BM25 runs.
K1, B = 0.9, 0.4


class BM25Index:
    """A bm25s index over ``docs`` (id → text), English stopwords, no stemming."""

    def __init__(self, docs: dict[str, str], *, k1: float = K1, b: float = B):
        self.doc_ids = list(docs)
        self.retriever = bm25s.BM25(k1=k1, b=b)
        tokens = bm25s.tokenize([docs[d] for d in self.doc_ids], stopwords="en", show_progress=False)
        self.retriever.index(tokens, show_progress=False)

    def search(self, queries: dict[str, str], k: int = 100) -> pd.DataFrame:
        """Top-``k`` per query as a run table ``query_id, doc_id, rank, score``."""
        qids = list(queries)
        if not qids:
            return pd.DataFrame(columns=["query_id", "doc_id", "rank", "score"])
        k = min(k, len(self.doc_ids))
        tokens = bm25s.tokenize([queries[q] for q in qids], stopwords="en", show_progress=False)
        idx, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        doc_ids = np.asarray(self.doc_ids, dtype=object)
        rows = {
            "query_id": np.repeat(qids, k),
            "doc_id": doc_ids[idx.reshape(-1)],
            "rank": np.tile(np.arange(1, k + 1), len(qids)),
            "score": scores.reshape(-1).astype(float),
        }
        run = pd.DataFrame(rows)
        # bm25s returns zero-score hits when a query shares no term with enough documents: drop them.
        return run[run["score"] > 0].reset_index(drop=True)


def bm25_run(queries: dict[str, str], docs: dict[str, str], k: int = 100) -> pd.DataFrame:
    return BM25Index(docs).search(queries, k)
