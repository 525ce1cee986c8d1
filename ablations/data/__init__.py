"""Collections and training data: what is re-ranked, judged and learnt from.

- ``readers`` — TREC qrels/runs, TSV queries/passages, MS MARCO top-1000, BEIR JSONL (one line per error);
- ``collections`` — a collection name (``dl19``, ``beir/scifact/test``, a BEIR folder) → a :class:`RerankSet`
  (queries, candidates with text, qrels);
- ``bm25`` — bm25s first-stage retrieval for collections that ship no run;
- ``training`` — distillation and judged-pair groups for the trainer, test passages kept out;
- ``teacher`` — the bi-encoder teacher.
"""
