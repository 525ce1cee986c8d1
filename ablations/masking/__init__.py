"""Masks: which interactions are removed, and how a model runs without them.

- ``interactions`` — the vocabulary (``doc2query``: documents may not read the query; wildcards; the MICE
  steps as mask presets);
- ``masks`` — a mask *defined*: :class:`MaskSpec` (JSON data) and its compilation into a per-layer role table
  and additive attention bias (:func:`compile_mask`, :func:`compile_for`);
- ``masked`` — a mask *applied*: :class:`MaskedCrossEncoder`, :func:`with_mask`;
- ``prefix`` — the prefix-state cache that lets a sweep compute unmasked layers once.
"""
