"""A MICE model seen as a cross-encoder, so the attention tools (probe, ablation runner, explorer) accept it.

The probe and the ablation runner work on :class:`probe.model.CrossEncoder`: batches of joint
``[CLS] q [SEP] d [SEP]`` sequences with token roles, a forward whose self-attention runs through
:func:`probe.attention.attention_context` (hooks capture patterns, biases remove interactions).
:class:`MiceCrossEncoder` gives a MICE model exactly that surface, computing its *masked* plan — the
reference every faster plan equals (``tests/test_mice_plan.py``):

- pairs are tokenized the MICE way (query and document lengths of ``mice.json``; canonical document
  positions when the configuration has them), into joint sequences with explicit ``position_ids``;
- only the kept layers run (``num_layers`` is ``drop_layer``: a probe or an ablation sees layers
  ``0 .. drop_layer - 1``), each with the configuration's interaction table as an additive bias, through
  the model's own layer modules — so a capture hook sees the attention the MICE model computes (removed
  interactions are exactly 0) and an ablation's bias is added on top of the MICE mask;
- the score is the classifier on CLS after the last kept layer.

Scores equal :meth:`ablations.mice.model.MiceModel.score` (tested at 1e-4).
:func:`ablations.scorers.load_cross_encoder` loads "a cross-encoder or a MICE model" from a path.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ablations.masking.masks import MaskSpec
from ablations.mice.model import MiceModel
from probe.errors import BadInput
from probe.model import CrossEncoder, Pair, PairBatch


class MiceCrossEncoder(CrossEncoder):
    """``mice`` (a :class:`MiceModel`) with the cross-encoder surface; runs the masked plan of its layers."""

    prefix_cacheable = False  # the prefix-state cache replays the plain forward (joint positions, no table)

    def __init__(self, mice: MiceModel):
        super().__init__(mice.ce.model, mice.ce.tokenizer, max_length=mice.config.max_length, name=mice.name)
        self.mice = mice
        self.config = mice.config
        self.executor = mice.executor
        self.signature = f"mice:{mice.config.fingerprint()}"

    @classmethod
    def load(cls, config: str | os.PathLike, *, device: str | None = None) -> MiceCrossEncoder:
        return cls(MiceModel.load(config, device=device))

    @property
    def num_layers(self) -> int:
        """The kept layers (``drop_layer``); later layers are never run."""
        return int(self.executor.plan.drop)

    def describe(self) -> str:
        return f"MICE {self.config.label} (masked plan, layers 0-{self.num_layers - 1})"

    def save(self, path: str | os.PathLike):
        return self.mice.save(path)

    def removing(self, spec: MaskSpec) -> MiceCrossEncoder:
        """This MICE model with ``spec``'s interactions removed as well: one configuration whose mask is both
        (the same weights), so a role left without keys falls back to itself as in any mask."""
        if not spec.rules:
            return self
        cfg = dataclasses.replace(
            self.config, mask=MaskSpec([*self.config.mask.rules, *spec.rules]), plan=None
        )
        return MiceCrossEncoder(MiceModel(self.mice.ce, cfg, name=f"{self.name} − {spec.label}"))

    # ------------------------------------------------------------ tokenizing
    def _lengths(self, pairs: Sequence[Pair]) -> np.ndarray:
        ex = self.executor
        queries = list(dict.fromkeys(q for q, _ in pairs))
        q_len = dict(zip(queries, (len(x) for x in ex.tokenize_queries(queries))))
        d_len = [len(x) for x in ex.tokenize_docs([d for _, d in pairs])]
        return np.array([q_len[q] + n for (q, _), n in zip(pairs, d_len)])

    def _joint(self, pairs: Sequence[Pair], rows: Sequence[int]) -> PairBatch:
        b = self.executor.encode([pairs[i] for i in rows], list(rows))
        ids, pos, types, roles, mask = self.executor._joint_inputs(b)
        return PairBatch(ids, mask, roles, types, list(rows), pos)

    def encode(self, pairs: Sequence[Pair]) -> PairBatch:
        if len(pairs) == 0:
            raise BadInput("no pairs to encode")
        return self._joint(pairs, range(len(pairs)))

    def batches(self, pairs: Sequence[Pair], batch_size: int = 32) -> Iterator[PairBatch]:
        """Length-sorted batches of joint sequences (longest first); ``index`` maps back."""
        if batch_size < 1:
            raise BadInput(f"batch_size {batch_size} must be >= 1")
        if len(pairs) == 0:
            return
        order = np.argsort(-self._lengths(pairs), kind="stable")
        for start in range(0, len(order), batch_size):
            yield self._joint(pairs, order[start : start + batch_size].tolist())

    # --------------------------------------------------------------- scoring
    def forward(self, batch: PairBatch) -> torch.Tensor:
        if batch.position_ids is None:
            raise BadInput(
                "this batch was not encoded by the MICE model (no position_ids); use its batches()"
            )
        b = batch.to(self.device)
        return self.executor.joint_forward(
            b.input_ids, b.position_ids, b.token_type_ids, b.roles, b.attention_mask
        )
