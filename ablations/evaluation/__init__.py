"""Evaluation: re-rank, score with ir_measures, compare with paired statistics.

- ``measures`` — measure names parsed once; per-query tables (``query_id, measure, value``) and their means;
- ``rerank`` — score a rerank set with any scorer; the ``ablations.evaluate`` job (runs + metrics table);
- ``stats`` — paired t-test, bootstrap CI and wins/ties/losses between two per-query columns.

The results format itself (parquet + JSON manifest, atomic writes) is :mod:`ablations.results`.
"""
