"""Experiment drivers: a mask *evaluated* against the full model, over a grid, greedily, or model against
model.

- ``runner`` — :class:`Experiment`: a model on a rerank set with its cached baseline; one mask → per-query and
  summary tables with significance;
- ``sweep`` — the interaction × layer (× head group) grid, resumable cell by cell;
- ``search`` — the greedy minimal-interaction-set search;
- ``compare`` — cross-encoder vs masked / retrained MICE vs MaxSim / LITE: effectiveness, latency, storage;
- ``probe`` — attention flows, rollout and attributions of a model over a collection.
"""
