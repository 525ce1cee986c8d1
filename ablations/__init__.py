"""Experiments on cross-encoders: remove interactions, measure the cost, export and retrain MICE models.

Library, lowest layer first (a part imports only from the parts above it; ``tests/test_layering.py``):

- ``paths`` (where data, models and caches live; model names) and ``results`` (the results format);
- ``data`` — collections, readers, BM25, training data;
- ``evaluation`` — re-ranking, ir_measures, paired statistics;
- ``masking`` — the interaction vocabulary, mask specs and their compilation, the masked cross-encoder;
- ``mice`` — MICE configurations, export, execution plans, document-state index, late-interaction baselines;
- ``scorers`` — a model name or folder → the right scorer;
- ``training`` — the training loop, the trainer and the MICE / MaxSim / LITE retrainer;
- ``experiments`` — the ablation runner, sweep, search, comparison and probe drivers.

Command-line entry points (thin: parse, call one library function, print): ``python -m ablations.run``,
``evaluate``, ``sweep``, ``search``, ``export``, ``retrain``, ``compare``, ``train``; their shared arguments
are in ``cliargs``.
"""
