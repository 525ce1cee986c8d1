"""Train a cross-encoder: distil a teacher, then fine-tune on judged pairs, with early stopping.

Settings are one dataclass (:class:`TrainConfig`, a list of :class:`Stage`) with named presets
(:data:`TRAINING_PRESETS`):

- ``dl19`` — a 6-layer cross-encoder distilled from the 12-layer reference cross-encoder. The student starts
  from the teacher's even layers and its head; one stage distils the teacher's logits (margin-MSE) on DL20 +
  DL21 training queries (their BM25 top-100 and judged passages) and MS MARCO dev-small queries (bm25s
  candidates from the DL20 + DL21 passage pools); model selection on held-out DL20 queries. DL 2019 is
  never trained or selected on, nor are its passages; it is evaluated once at the end.
- ``dl20`` — the mirror: trains on DL19 + DL21, validates on held-out DL19 queries, tests on DL 2020.
- ``bi-dl19`` / ``bi-dl20`` — the first recipe, on the same splits: all-MiniLM-L6-v2 with a fresh head,
  distilled from the bi-encoder teacher (all-MiniLM-L6-v2's cosine), then fine-tuned on judged pairs
  (localized contrastive loss, BM25 hard negatives), with early stopping.
- ``smoke`` — a one-minute run of the same code path (for CI).

:func:`train` builds the model, the validation set and one :class:`~ablations.training.loop.Phase` per stage,
and runs them with :func:`ablations.training.loop.fit` (checkpoints, resume, validation, early stopping);
at the end the selected model is evaluated on the test collections (``test_metrics`` next to ``train.json``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ablations.data import training as td
from ablations.data.collections import load_collection
from ablations.data.teacher import DEFAULT_SCALE, load_teacher, teacher_kind
from ablations.evaluation.measures import aggregate, evaluate_runs
from ablations.evaluation.rerank import rerank
from ablations.paths import TRAINED_MODELS, resolve_model, trained_model_dir
from ablations.results import write_table
from ablations.training import loop
from ablations.training.loop import LOSSES, batch_loss, bf16_enabled, optimizer_step, pairs_of
from probe.errors import BadInput
from probe.model import CrossEncoder


@dataclass
class Stage:
    name: str
    loss: str  # one of LOSSES
    data: str  # "distill" or "judged"
    steps: int
    lr: float
    groups_per_step: int = 4
    group_size: int = 8
    warmup: float = 0.1  # fraction of steps
    # distillation data
    dev_queries: int = 400  # MS MARCO dev-small queries (one group each)
    groups_per_query: int = 12  # groups per training-collection query
    depth: int = 30
    # teacher margins (or, for kl, logits) are multiplied by this; None: the teacher kind's default
    # (10 for a bi-encoder's cosines, ~0.1 apart; 0.2 for a cross-encoder's logits: teacher.DEFAULT_SCALE)
    teacher_scale: float | None = None
    # judged data
    min_positive: int = 2


@dataclass
class TrainConfig:
    out: str
    init_model: str = "minilm-l6"
    # keep only these encoder layers of init_model (e.g. [1, 3, 5, 7, 9, 11]: a 6-layer student made from the
    # 12-layer reference's odd layers, its trained head kept); None: every layer
    init_layers: list[int] | None = None
    train_collections: list[str] = field(default_factory=lambda: ["dl20", "dl21"])
    validation: str = "dl20"  # held-out queries of this training collection select the model
    validation_fraction: float = 0.25
    validation_depth: int = 30
    test: list[str] = field(default_factory=lambda: ["dl19"])
    stages: list[Stage] = field(default_factory=list)
    seed: int = 0
    max_length: int = 128  # training length; evaluation uses the scorer's default (256)
    eval_every: int = 100
    patience: int = 4  # evaluations without improvement before a stage stops
    checkpoint_every: int = 50
    # the model distilled from: a cross-encoder name or folder (the 12-layer reference by default) or a
    # sentence-transformers bi-encoder (``minilm-l6``: the free teacher of the first presets)
    teacher: str = "reference"
    # tokens the teacher scores at; None: max_length (what the student sees)
    teacher_max_length: int | None = None
    teacher_cache: str | None = None  # teacher-score file (default: $MICE_CACHE/teacher/<key>.parquet)
    # speed: bfloat16 autocast where the hardware has it ("auto"), word embeddings frozen (half the
    # parameters, rarely-seen rows), and each step's pairs scored in length-sorted micro-batches (less
    # padding)
    bf16: str = "auto"  # "auto", "on" or "off"
    freeze_word_embeddings: bool = True
    # the embeddings and the lowest ``frozen_layers`` encoder layers keep the pretrained weights, and no
    # backward pass runs through them: 3 of MiniLM-L6's 6 layers make a step 1.5x faster on 2 CPU cores, but
    # cost the DL19 preset its margin over BM25 (README), so the presets train every layer
    frozen_layers: int = 0
    micro_batches: int = 4

    def __post_init__(self):
        self.stages = [s if isinstance(s, Stage) else Stage(**s) for s in self.stages]
        for s in self.stages:
            if s.loss not in LOSSES:
                raise BadInput(
                    f"stage {s.name!r}: unknown loss {s.loss!r}; expected one of {', '.join(LOSSES)}"
                )
            if s.data not in ("distill", "judged"):
                raise BadInput(f"stage {s.name!r}: data {s.data!r} must be 'distill' or 'judged'")
        overlap = set(self.train_collections) & set(self.test)
        if overlap:
            raise BadInput(f"collection {sorted(overlap)[0]!r} is both trained on and tested on")
        if self.bf16 not in ("auto", "on", "off"):
            raise BadInput(f"bf16 {self.bf16!r} must be 'auto', 'on' or 'off'")
        if self.frozen_layers < 0:
            raise BadInput(f"frozen_layers {self.frozen_layers} must be >= 0")
        if self.init_layers is not None:
            layers = list(self.init_layers)
            if not layers or sorted(set(layers)) != layers or layers[0] < 0:
                raise BadInput(
                    f"init_layers {layers} must be distinct layer indices >= 0 in increasing order"
                )
        if self.micro_batches < 1:
            raise BadInput(f"micro_batches {self.micro_batches} must be >= 1")
        if self.validation not in self.train_collections:
            raise BadInput(
                f"validation collection {self.validation!r} must be one of the training collections"
            )


#: The teacher's layers the presets' 6-layer student starts from (every second one, DistilBERT-style).
STUDENT_LAYERS = [0, 2, 4, 6, 8, 10]


def _reference(test: str, train: list[str]) -> TrainConfig:
    return TrainConfig(
        out=str(trained_model_dir(TRAINED_MODELS[f"minilm-l6-ce-{test}"])),
        train_collections=train,
        validation=train[0],
        test=[test],
        # the student starts from the 12-layer reference's even layers and its head (6 layers × 384, the
        # MiniLM-L6 shape), so it already ranks (held-out validation 0.51 before any step) and its logits are
        # on the teacher's scale (teacher_scale 1). The teacher scores ~20,000 pairs at the student's 128
        # tokens: 6 groups of 8 per training query (its BM25 top-100 and judged passages) + 2,000 dev-small
        # queries (500 before 2026-12-05: 8,424 pairs, DL19 0.6642, 5.7 points below the teacher; README).
        # Up to 1,200 steps; early stopping ended both presets at steps 1,000 / 900.
        init_model="reference",
        init_layers=list(STUDENT_LAYERS),
        stages=[
            Stage(
                "distill",
                "margin-mse",
                "distill",
                steps=1200,
                lr=5e-5,
                dev_queries=2000,
                groups_per_query=6,
                teacher_scale=1.0,
            ),
        ],
    )


def _bi_encoder(test: str, train: list[str]) -> TrainConfig:
    """The first recipe (before the 12-layer reference existed): all-MiniLM-L6-v2 with a fresh head, 900
    distillation steps from the bi-encoder teacher (cosine margins x 10) over 2,000 dev-small queries and 12
    groups per training query, then 100 steps on judged pairs."""
    return TrainConfig(
        out=str(trained_model_dir(TRAINED_MODELS[f"minilm-l6-bi-{test}"])),
        init_model="minilm-l6",
        teacher="minilm-l6",
        train_collections=train,
        validation=train[0],
        test=[test],
        stages=[
            Stage("distill", "margin-mse", "distill", steps=900, lr=1e-4, dev_queries=2000),
            Stage("finetune", "lce", "judged", steps=100, lr=2e-5),
        ],
    )


#: Named training runs (``python -m ablations.train --preset NAME``); each call builds a fresh config.
TRAINING_PRESETS = {
    "dl19": lambda: _reference("dl19", ["dl20", "dl21"]),
    "dl20": lambda: _reference("dl20", ["dl19", "dl21"]),
    "bi-dl19": lambda: _bi_encoder("dl19", ["dl20", "dl21"]),
    "bi-dl20": lambda: _bi_encoder("dl20", ["dl19", "dl21"]),
    "smoke": lambda: TrainConfig(
        out="runs/smoke-model",
        test=["dl19"],
        validation_depth=20,
        eval_every=15,
        checkpoint_every=10,
        stages=[
            Stage(
                "distill",
                "margin-mse",
                "distill",
                steps=30,
                lr=1e-4,
                dev_queries=20,
                groups_per_query=1,
                group_size=4,
            ),
            Stage("finetune", "lce", "judged", steps=10, lr=1e-5, group_size=4),
        ],
    ),
}


# ----------------------------------------------------------------------------- the cross-encoder's step
def score_pairs(scorer: CrossEncoder, pairs: list, micro_batches: int, bf16: bool) -> torch.Tensor:
    """Training-mode scores of ``pairs`` in their order, computed in ``micro_batches`` length-sorted
    chunks (less padding; the same scores and gradients as one batch)."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    with torch.autocast(scorer.device.type, dtype=torch.bfloat16, enabled=bf16):
        scores = torch.cat(
            [
                scorer.forward(scorer.encode([pairs[i] for i in chunk])).float()
                for chunk in np.array_split(np.array(order), min(micro_batches, len(pairs)))
            ]
        )
    return scores[torch.argsort(torch.as_tensor(order, device=scores.device))]  # back to the pairs' order


def train_step(
    scorer: CrossEncoder,
    batch: list,
    loss: str,
    scale: float,
    trainable: list,
    optimizer,
    micro_batches: int,
    bf16: bool,
) -> float:
    """One optimizer step on a batch of groups (``loss`` with teacher scores times ``scale``, gradients
    clipped to norm 1); returns the loss."""
    scores = score_pairs(scorer, pairs_of(batch), micro_batches, bf16)
    return optimizer_step(batch_loss(loss, batch, scores, scale), trainable, optimizer)


def keep_layers(model: torch.nn.Module, layers: list[int]) -> None:
    """Keep only ``layers`` of a BERT-family encoder (``model.base_model.encoder.layer``), in that order:
    a shallower student initialised from a deeper model's layers (DistilBERT-style)."""
    base = model.base_model
    blocks = getattr(getattr(base, "encoder", None), "layer", None)
    if blocks is None:
        raise BadInput(f"init_layers: {type(base).__name__} has no encoder.layer list to select from")
    if layers[-1] >= len(blocks):
        raise BadInput(
            f"init_layers {layers}: layer {layers[-1]} does not exist; "
            f"the model has layers 0-{len(blocks) - 1}"
        )
    base.encoder.layer = torch.nn.ModuleList(blocks[i] for i in layers)
    for i, block in enumerate(base.encoder.layer):  # transformers' per-layer index (caches, masks)
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = i
    model.config.num_hidden_layers = len(layers)


def freeze(model: torch.nn.Module, layers: int, word_embeddings: bool = True) -> None:
    """Stop gradients to the word embeddings and, when ``layers > 0``, to all embeddings and the lowest
    ``layers`` encoder layers (a BERT-family ``model.base_model.encoder.layer`` list)."""
    if word_embeddings or layers:
        model.get_input_embeddings().weight.requires_grad_(False)
    if not layers:
        return
    base = model.base_model
    blocks = getattr(getattr(base, "encoder", None), "layer", None)
    if blocks is None:
        raise BadInput(f"frozen_layers {layers}: {type(base).__name__} has no encoder.layer list to freeze")
    if layers >= len(blocks):
        raise BadInput(f"frozen_layers {layers} must be below the model's {len(blocks)} layers")
    for module in [base.embeddings, *blocks[:layers]]:
        module.requires_grad_(False)


# ----------------------------------------------------------------------------- train
def train(cfg: TrainConfig, *, progress: bool = True, stop_after: int | None = None) -> dict:
    """Run (or resume, or skip if finished) a training run; returns the summary written to train.json.

    ``stop_after=N`` checkpoints and returns ``{"interrupted": True}`` after N optimizer steps of this call
    (what a killed run leaves behind); calling again resumes from that checkpoint.
    """
    return loop.fit(
        lambda: _run(cfg, progress),
        out=Path(cfg.out),
        record="train.json",
        verb="trained",
        config=dataclasses.asdict(cfg),
        seed=cfg.seed,
        progress=progress,
        stop_after=stop_after,
    )


def _run(cfg: TrainConfig, progress: bool) -> loop.Run:
    """The model (fresh head, frozen parts), the validation set, one phase per stage, the test evaluation."""
    distilling = any(s.data == "distill" for s in cfg.stages)
    kind = teacher_kind(cfg.teacher) if distilling else None  # a bad teacher is refused before any work
    scorer = CrossEncoder.from_pretrained(
        resolve_model(cfg.init_model), new_head=True, max_length=cfg.max_length
    )
    if cfg.init_layers is not None:
        keep_layers(scorer.model, list(cfg.init_layers))
    freeze(scorer.model, cfg.frozen_layers, cfg.freeze_word_embeddings)
    use_bf16 = bf16_enabled(cfg.bf16, scorer.device)
    _, held_q = td.split_queries(load_collection(cfg.validation).queries, cfg.validation_fraction, cfg.seed)
    held_out = {f"{cfg.validation}:{q}" for q in held_q}
    val_set = td.validation_set(cfg.validation, sorted(held_out), cfg.validation_depth)
    excluded = td.test_passages(cfg.test)  # no test-collection passage is ever trained on
    trainable = [p for p in scorer.model.parameters() if p.requires_grad]
    teacher_record: dict = {}
    teacher = None

    def groups(stage: Stage) -> list[td.Group]:
        nonlocal teacher
        if stage.data == "distill":
            if teacher is None:
                teacher = load_teacher(cfg.teacher, max_length=cfg.teacher_max_length or cfg.max_length)
            found = td.distillation_groups(
                cfg.train_collections,
                exclude_queries=held_out,
                exclude_docs=excluded,
                dev_queries=stage.dev_queries,
                groups_per_query=stage.groups_per_query,
                group_size=stage.group_size,
                depth=stage.depth,
                seed=cfg.seed,
                teacher=teacher,
                teacher_cache=cfg.teacher_cache,
                progress=progress,
                record=teacher_record,
            )
        else:
            found = td.judged_groups(
                cfg.train_collections,
                exclude_queries=held_out,
                exclude_docs=excluded,
                group_size=stage.group_size,
                min_positive=stage.min_positive,
                seed=cfg.seed,
            )
        if len(found) < stage.groups_per_step:
            raise BadInput(f"stage {stage.name!r} has {len(found)} groups, fewer than groups_per_step")
        return found

    def phase(stage: Stage) -> loop.Phase:
        scale = stage.teacher_scale if stage.teacher_scale is not None else DEFAULT_SCALE.get(kind, 1.0)
        return loop.Phase(
            name=stage.name,
            label=f"{stage.name} ({stage.loss})",
            steps=stage.steps,
            lr=stage.lr,
            warmup=stage.warmup,
            groups_per_step=stage.groups_per_step,
            params=trainable,
            groups=lambda: groups(stage),
            step=lambda batch, opt: train_step(
                scorer, batch, stage.loss, scale, trainable, opt, cfg.micro_batches, use_bf16
            ),
        )

    def test(state: dict, best_dir: Path) -> dict:  # the selected model on the test collections, once
        best = CrossEncoder.from_pretrained(best_dir)
        rows = []
        for name in cfg.test:
            rs = load_collection(name)
            runs = {
                "bm25": rs.candidates[["query_id", "doc_id", "score"]],
                "cross-encoder": rerank(best, rs, progress=progress),
            }
            rows.append(evaluate_runs(runs, rs))
        table = (
            pd.concat(rows, ignore_index=True)
            if rows
            else pd.DataFrame(columns=["collection", "run", "query_id", "measure", "value"])
        )
        out = Path(cfg.out)
        write_table(
            table, out, "test_metrics", {"schema_version": 1, "kind": "train-test", "model": str(out)}
        )
        summary = {"test": aggregate(table).to_dict(orient="records") if len(table) else []}
        if distilling:  # the teacher and its scoring time (0 when read back from the cache)
            summary["teacher"] = {"kind": kind, **teacher_record}
        return summary

    return loop.Run(
        scorer=scorer,
        module=scorer.model,
        phases=[phase(s) for s in cfg.stages],
        val_set=val_set,
        eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every,
        patience=cfg.patience,
        bf16=use_bf16,
        finish=test,
    )
