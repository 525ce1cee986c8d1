"""Retrain a MICE model (or a late-interaction baseline) from the cross-encoder's weights.

Masks applied without retraining collapse (the MICE paper: MiniLM MS MARCO dev nDCG@10 44.4 → 27.8 from
step 1 to step 2), so the MICE model is fine-tuned *under its mask*: the student is the MICE
configuration run by its execution plan in training mode (the ``split`` plan where valid — the same
function as the masked forward, tested — so gradients flow through exactly what is served), initialised
from the configuration's weights (the reference cross-encoder).

The same loop as the trainer (:func:`ablations.training.loop.fit`: checkpoints, resume, validation, the best
model kept), the same data sources (:mod:`ablations.data.training`: the training collections' queries with
BM25 candidates and judged passages, plus MS MARCO dev-small queries with bm25s candidates; no passage of a
test collection; held-out queries of the validation collection), the same losses
(:func:`ablations.training.loop.group_loss`), the same schedule (AdamW, linear warm-up and decay, gradient
clipping at 1) and model selection on held-out validation nDCG@10. The teacher is the *full cross-encoder*
(margin-MSE on its scores, ``loss="margin-mse"``, the default), or plain labels (``loss="lce"``: one judged
positive + BM25 hard negatives per group). One phase, no early stopping; the summary (``retrain.json``) adds
the loss of a fixed batch before and after.

The output folder loads with :meth:`ablations.mice.MiceModel.load` (or :meth:`LateInteractionScorer.load`
for the baselines).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ablations.data import training as td
from ablations.data.collections import RerankSet
from ablations.data.teacher import CrossEncoderTeacher
from ablations.mice.config import MiceConfig
from ablations.mice.late_interaction import KINDS as LATE_KINDS
from ablations.mice.late_interaction import LateInteractionScorer
from ablations.mice.model import MiceModel
from ablations.paths import resolve_model
from ablations.training import loop
from ablations.training.loop import LOSSES, batch_loss, bf16_enabled, optimizer_step, pairs_of
from probe.errors import BadInput
from probe.model import CrossEncoder

STUDENTS = ("mice", *LATE_KINDS)


@dataclass
class RetrainConfig:
    out: str
    config: str  # the MICE configuration (mice.json); baselines take their backbone from it too
    student: str = "mice"  # mice | maxsim | lite
    init: str | None = None  # weights to start from (default: the configuration's weights / base model)
    teacher: str = "reference"  # the full cross-encoder distilled from (margin-MSE)
    teacher_cache: str | None = None  # teacher-score file (default: $MICE_CACHE/teacher/<key>.parquet)
    loss: str = "margin-mse"
    # feature distillation (MICE only): + cls_weight × MSE between the student's last [CLS] state and the
    # teacher's final-layer [CLS] state, what the shared pooler and classifier read (0: scores only)
    cls_weight: float = 0.0
    data: str | None = None  # distill | judged (default: distill for margin-mse/kl/mse, judged otherwise)
    # late-interaction students: encode with the backbone's first N layers only (None: all of them)
    encoder_layers: int | None = None
    steps: int = 300
    lr: float = 3e-5
    head_lr: float = 1e-3  # new parameters of the baselines (projection, LITE MLP)
    warmup: float = 0.1
    groups_per_step: int = 4
    group_size: int = 8
    dev_queries: int = 200
    groups_per_query: int = 4
    # GPL-style groups (distill only): queries cropped from this many training-pool passages, each with
    # that passage and bm25s hard negatives from the pool (ablations.data.training.pseudo_query_groups)
    pseudo_queries: int = 0
    depth: int = 30
    min_positive: int = 2
    # TREC DL 2021 (MS MARCO v2 passages) and MS MARCO dev-small queries: no DL 2019 or DL 2020 query,
    # judgement or passage is trained or selected on, so both stay test collections
    train_collections: list[str] = field(default_factory=lambda: ["dl21"])
    validation: str = "dl21"
    validation_fraction: float = 0.25
    validation_depth: int = 30
    test: list[str] = field(default_factory=lambda: ["dl19", "dl20"])  # their passages are never trained on
    max_doc_length: int = 116  # training-time document budget (the reference was trained at 128 tokens)
    eval_every: int = 100  # 0: no validation (the last step is kept)
    checkpoint_every: int = 50
    seed: int = 0
    bf16: str = "auto"  # bfloat16 autocast in training steps: auto (where the hardware has it), on, off

    def __post_init__(self):
        if self.student not in STUDENTS:
            raise BadInput(f"--student {self.student!r}; expected one of {', '.join(STUDENTS)}")
        if self.loss not in LOSSES:
            raise BadInput(f"--loss {self.loss!r}; expected one of {', '.join(LOSSES)}")
        if self.data is None:
            self.data = "distill" if self.loss in ("margin-mse", "kl", "mse") else "judged"
        if self.data not in ("distill", "judged"):
            raise BadInput(f"--data {self.data!r}; expected distill or judged")
        if self.loss in ("margin-mse", "kl") and self.data != "distill":
            raise BadInput(f"--loss {self.loss} needs teacher scores: use --data distill")
        if self.steps < 1 or self.groups_per_step < 1 or self.group_size < 2:
            raise BadInput("--steps and --groups-per-step must be >= 1, --group-size >= 2")
        if not isinstance(self.cls_weight, (int, float)) or self.cls_weight < 0:
            raise BadInput(f"--cls-weight {self.cls_weight!r} must be a number >= 0")
        if self.cls_weight and self.student != "mice":
            raise BadInput(
                f"--cls-weight distils the teacher's [CLS] state into a MICE student; a {self.student} "
                "student has no [CLS] head: leave it at 0"
            )
        if self.cls_weight and self.data != "distill":
            raise BadInput("--cls-weight needs the teacher: use --data distill")
        if self.encoder_layers is not None:
            if self.student == "mice":
                raise BadInput(
                    f"--encoder-layers {self.encoder_layers} is for the maxsim and lite students; a MICE "
                    "student keeps the layers its configuration names (re-export with another preset)"
                )
            if isinstance(self.encoder_layers, bool) or not isinstance(self.encoder_layers, int):
                raise BadInput(f"--encoder-layers {self.encoder_layers!r}: expected a whole number >= 1")
            if self.encoder_layers < 1:
                raise BadInput(f"--encoder-layers {self.encoder_layers}: expected a whole number >= 1")
        if isinstance(self.pseudo_queries, bool) or not isinstance(self.pseudo_queries, int):
            raise BadInput(f"--pseudo-queries {self.pseudo_queries!r}: expected a whole number >= 0")
        if self.pseudo_queries < 0:
            raise BadInput(f"--pseudo-queries {self.pseudo_queries}: expected a whole number >= 0")
        if self.pseudo_queries and self.data != "distill":
            raise BadInput("--pseudo-queries needs the teacher to score its groups: use --data distill")
        if self.bf16 not in ("auto", "on", "off"):
            raise BadInput(f"--bf16 {self.bf16!r}; expected auto, on or off")
        if self.validation not in self.train_collections:
            raise BadInput(
                f"validation collection {self.validation!r} must be one of the training collections"
            )
        overlap = set(self.train_collections) & set(self.test)
        if overlap:
            raise BadInput(f"collection {sorted(overlap)[0]!r} is both trained on and tested on")


# ------------------------------------------------------------------------------------------ students
class Student:
    """What the loop needs of a student: its scorer, its module, training scores, parameter groups."""

    def __init__(self, cfg: RetrainConfig, mice_cfg: MiceConfig, config_path: Path | None):
        self.kind = cfg.student
        if cfg.student == "mice":
            self.scorer = MiceModel.load(config_path or mice_cfg, weights=cfg.init)
            view = dataclasses.replace(
                self.scorer.config, max_doc_length=min(cfg.max_doc_length, self.scorer.config.max_doc_length)
            )
            self.train_view = MiceModel(self.scorer.ce, view, plan=self.scorer.plan.shape)
            self.module = self.scorer.ce.model
            self.shape = "split" if "split" in self.scorer.plan.valid else "masked"
        else:
            weights = cfg.init or (
                str(Path(config_path).parent / mice_cfg.weights)
                if mice_cfg.weights and config_path
                else mice_cfg.base_model
            )
            self.scorer = LateInteractionScorer.from_cross_encoder(
                weights,
                cfg.student,
                seed=cfg.seed,
                encoder_layers=cfg.encoder_layers,
                max_doc_length=mice_cfg.max_doc_length,
            )
            self.module = self.scorer.module
        self.max_doc_length = cfg.max_doc_length

    def scores(self, pairs) -> torch.Tensor:
        if self.kind == "mice":
            return self.train_view.executor.forward(self.train_view.encode(pairs), self.shape)
        return self.scorer.train_scores(pairs, max_doc_length=self.max_doc_length)

    def scores_and_cls(self, pairs) -> tuple[torch.Tensor, torch.Tensor]:
        """A MICE student's scores and the ``(n, H)`` CLS states its head read (one forward)."""
        ex = self.train_view.executor
        states = ex.forward(self.train_view.encode(pairs), self.shape, head=False)
        return ex.head(states), states

    def param_groups(self, cfg: RetrainConfig) -> list[dict]:
        if self.kind == "mice":
            return [{"params": [p for p in self.module.parameters() if p.requires_grad], "lr": cfg.lr}]
        enc = list(self.module.encoder.parameters())
        ids = {id(p) for p in enc}
        return [
            {"params": enc, "lr": cfg.lr},
            {"params": [p for p in self.module.parameters() if id(p) not in ids], "lr": cfg.head_lr},
        ]


class TeacherStates:
    """The teacher's final-layer ``[CLS]`` states of pairs, computed once per distinct pair (in memory)."""

    def __init__(self, ce: CrossEncoder):
        self.ce, self.seen = ce, {}
        ce.model.eval()

    def __call__(self, pairs) -> torch.Tensor:
        todo = list(dict.fromkeys(p for p in pairs if p not in self.seen))
        if todo:
            with torch.inference_mode():
                for batch in self.ce.batches(todo, batch_size=len(todo)):
                    states = self.ce.cls_states(batch).float().cpu()
                    for j, i in enumerate(batch.index):
                        self.seen[todo[i]] = states[j].clone()
        return torch.stack([self.seen[p] for p in pairs])


# ------------------------------------------------------------------------------------------ retrain
def retrain(
    cfg: RetrainConfig,
    *,
    progress: bool = True,
    stop_after: int | None = None,
    groups: list[td.Group] | None = None,
    val_set: RerankSet | None = None,
) -> dict:
    """Run (or resume, or skip if finished) a retraining; returns the summary written to ``retrain.json``.

    ``groups`` / ``val_set`` replace the collections (tests); ``stop_after=N`` checkpoints and returns after
    N optimizer steps of this call (what a killed run leaves behind).
    """
    return loop.fit(
        lambda: _run(cfg, progress, groups, val_set),
        out=Path(cfg.out),
        record="retrain.json",
        verb="retrained",
        config=_settings(cfg),
        seed=cfg.seed,
        progress=progress,
        stop_after=stop_after,
    )


def _settings(cfg: RetrainConfig) -> dict:
    """The settings a checkpoint is stored with: a full-depth encoder's without pseudo-queries are what
    they were before ``encoder_layers`` and ``pseudo_queries`` existed, so runs checkpointed then still
    resume."""
    out = dataclasses.asdict(cfg)
    if out["encoder_layers"] is None:
        del out["encoder_layers"]
    if not out["pseudo_queries"]:
        del out["pseudo_queries"]
    return out


def _run(
    cfg: RetrainConfig, progress: bool, groups: list[td.Group] | None, val_set: RerankSet | None
) -> loop.Run:
    """The student, its training groups (teacher-scored or judged), one phase, the fixed-batch loss."""
    config_path = Path(cfg.config)
    mice_cfg = MiceConfig.load(config_path)
    if cfg.student == "mice" and not mice_cfg.score_reads_document():
        raise BadInput(
            f"MICE configuration {str(config_path)!r} ({mice_cfg.label}): its score cannot "
            "depend on the document, so there is nothing to retrain; re-export it with a later "
            "drop layer"
        )
    student = Student(cfg, mice_cfg, config_path)
    teacher_record: dict = {}
    teacher_ce = None
    if cfg.cls_weight:
        teacher_ce = CrossEncoder.from_pretrained(resolve_model(cfg.teacher))
        if teacher_ce.model.config.hidden_size != student.module.config.hidden_size:
            raise BadInput(
                f"--cls-weight: the teacher's [CLS] states have {teacher_ce.model.config.hidden_size} "
                f"dimensions, the student's {student.module.config.hidden_size}; they must match"
            )

    if groups is None:
        from ablations.data.collections import load_collection

        queries = load_collection(cfg.validation).queries
        _, held_q = td.split_queries(queries, cfg.validation_fraction, cfg.seed)
        held_out = {f"{cfg.validation}:{q}" for q in held_q}
        if val_set is None and cfg.eval_every:
            val_set = td.validation_set(cfg.validation, sorted(held_out), cfg.validation_depth)
        excluded = td.test_passages(cfg.test)
        if cfg.data == "distill":
            teacher = CrossEncoderTeacher(
                teacher_ce or CrossEncoder.from_pretrained(resolve_model(cfg.teacher))
            )
            # the pseudo-query groups (if any) share the pool, exclusions, shape, seed, teacher and record
            shared = dict(
                exclude_docs=excluded,
                group_size=cfg.group_size,
                depth=cfg.depth,
                seed=cfg.seed,
                teacher=teacher,
                teacher_cache=cfg.teacher_cache,
                progress=progress,
                record=teacher_record,
            )
            groups = td.distillation_groups(
                cfg.train_collections,
                exclude_queries=held_out,
                dev_queries=cfg.dev_queries,
                groups_per_query=cfg.groups_per_query,
                **shared,
            )
            if cfg.pseudo_queries:
                groups += td.pseudo_query_groups(cfg.train_collections, passages=cfg.pseudo_queries, **shared)
        else:
            groups = td.judged_groups(
                cfg.train_collections,
                exclude_queries=held_out,
                exclude_docs=excluded,
                group_size=cfg.group_size,
                min_positive=cfg.min_positive,
                seed=cfg.seed,
            )
    if len(groups) < cfg.groups_per_step:
        raise BadInput(f"{len(groups)} training groups, fewer than --groups-per-step {cfg.groups_per_step}")

    module = student.module
    device = next(module.parameters()).device
    use_bf16 = bf16_enabled(cfg.bf16, device)

    teacher_states = TeacherStates(teacher_ce) if teacher_ce is not None else None

    def step(batch: list[td.Group], optimizer) -> float:
        pairs = pairs_of(batch)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            if teacher_states is None:
                scores = student.scores(pairs).float()
            else:
                scores, states = student.scores_and_cls(pairs)
                scores = scores.float()
        loss = batch_loss(cfg.loss, batch, scores, 1.0)
        if teacher_states is not None:
            target = teacher_states(pairs).to(states.device)
            loss = loss + cfg.cls_weight * torch.nn.functional.mse_loss(states.float(), target)
        return float(optimizer_step(loss, module.parameters(), optimizer))

    def fixed_loss() -> float:  # the first batch, without dropout: the same measurement before and after
        module.eval()
        with torch.no_grad():
            batch = td.batches(groups, cfg.groups_per_step, cfg.seed, 0)[0]
            value = float(batch_loss(cfg.loss, batch, student.scores(pairs_of(batch)), 1.0))
        module.train()
        return value

    def before(state: dict) -> None:
        state["fixed_before"] = fixed_loss()

    def finish(state: dict, best_dir: Path) -> dict:
        return {
            "student": cfg.student,
            "groups": len(groups),
            "fixed_batch_loss": {"before": state["fixed_before"], "after": fixed_loss()},
            "parameters": student.scorer.num_parameters(),
            "pairs": sum(len(g.docs) for g in groups),
            **({"teacher": teacher_record} if teacher_record else {}),
        }

    phase = loop.Phase(
        name=None,
        label=f"retrain {cfg.student} ({cfg.loss})",
        steps=cfg.steps,
        lr=cfg.lr,
        warmup=cfg.warmup,
        groups_per_step=cfg.groups_per_step,
        params=student.param_groups(cfg),
        groups=lambda: groups,
        step=step,
    )
    return loop.Run(
        scorer=student.scorer,
        module=module,
        phases=[phase],
        val_set=val_set if cfg.eval_every else None,
        eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every,
        patience=None,
        bf16=use_bf16,
        finish=finish,
        first=before,
    )
