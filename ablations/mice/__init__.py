"""MICE: a mask made into a faster model, and the late-interaction models it is compared with.

- ``config`` — the versioned MICE configuration (``mice.json``), presets ``mice-lK+N``;
- ``export`` — a configuration *exported* from a search result, mask spec or preset;
- ``plan`` — a configuration *compiled into an execution plan* (masked, split, doc-cache);
- ``doc_cache`` — the on-disk index of precomputed document states;
- ``model`` — :class:`MiceModel`, a configuration on a cross-encoder's weights, scored by its plan;
- ``view`` — :class:`MiceCrossEncoder`, the same model with the cross-encoder surface for the attention tools;
- ``late_interaction`` — ColBERT-style MaxSim and LITE baselines.

A MICE model is *retrained* by :mod:`ablations.training.retrain`.
"""
