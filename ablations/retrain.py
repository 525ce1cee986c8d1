"""Retrain a MICE model (or a late-interaction baseline) from the cross-encoder's weights.

    python -m ablations.retrain --config mice.json --out runs/mice-l2+3              # MICE student
    python -m ablations.retrain --config mice.json --student maxsim --out runs/maxsim  # baselines, same recipe
    python -m ablations.retrain --config mice.json --loss lce --out runs/mice-labels    # plain labels

Masks applied without retraining collapse (the MICE paper: MiniLM MS MARCO dev nDCG@10 44.4 → 27.8 from
step 1 to step 2), so the MICE model is fine-tuned *under its mask*: the student is the MICE
configuration run by its execution plan in training mode (the ``split`` plan where valid — the same
function as the masked forward, tested — so gradients flow through exactly what is served), initialised
from the configuration's weights (the reference cross-encoder).

Built from the foundation trainer's parts (:mod:`ablations.train`, :mod:`ablations.data.training`): the
same data sources (the training collections' queries with BM25 candidates and judged passages, plus MS
MARCO dev-small queries with bm25s candidates; no passage of a test collection; held-out queries of the
validation collection), the same losses (:func:`ablations.train.group_loss`), the same schedule (AdamW,
linear warm-up and decay, gradient clipping at 1) and model selection on held-out validation nDCG@10.
The teacher is the *full cross-encoder* (margin-MSE on its scores, ``--loss margin-mse``, the default),
or plain labels (``--loss lce``: one judged positive + BM25 hard negatives per group).

Checkpoints every ``--checkpoint-every`` steps to ``<out>/.checkpoint/state.pt``; rerunning the same
command resumes there; a finished run (``<out>/retrain.json``) is not redone. The output folder loads
with :meth:`ablations.mice.MiceModel.load` (or :meth:`LateInteractionScorer.load` for the baselines).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from probe.errors import BadInput, cli
from probe.model import CrossEncoder, Scorer, model_fingerprint

from ablations.data import training as td
from ablations.data.collections import RerankSet
from ablations.evaluation.measures import aggregate, evaluate_runs
from ablations.evaluation.rerank import rerank
from ablations.mice.late_interaction import KINDS as LATE_KINDS
from ablations.mice.late_interaction import LateInteractionScorer
from ablations.mice.model import MiceModel
from ablations.mice.config import MiceConfig
from ablations.paths import resolve_model
from ablations.results import atomic_write_text, environment, git_revision
from ablations.train import LOSSES, bf16_enabled, group_loss

STUDENTS = ("mice", *LATE_KINDS)


@dataclass
class RetrainConfig:
    out: str
    config: str  # the MICE configuration (mice.json); baselines take their backbone from it too
    student: str = "mice"  # mice | maxsim | lite
    init: str | None = None  # weights to start from (default: the configuration's weights / base model)
    teacher: str = "reference"  # the full cross-encoder distilled from (margin-MSE)
    loss: str = "margin-mse"
    data: str | None = None  # distill | judged (default: distill for margin-mse/kl/mse, judged otherwise)
    steps: int = 300
    lr: float = 3e-5
    head_lr: float = 1e-3  # new parameters of the baselines (projection, LITE MLP)
    warmup: float = 0.1
    groups_per_step: int = 4
    group_size: int = 8
    dev_queries: int = 200
    groups_per_query: int = 4
    depth: int = 30
    min_positive: int = 2
    train_collections: list[str] = field(default_factory=lambda: ["dl20", "dl21"])
    validation: str = "dl20"
    validation_fraction: float = 0.25
    validation_depth: int = 30
    test: list[str] = field(default_factory=lambda: ["dl19"])  # their passages are never trained on
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
        if self.bf16 not in ("auto", "on", "off"):
            raise BadInput(f"--bf16 {self.bf16!r}; expected auto, on or off")
        if self.validation not in self.train_collections:
            raise BadInput(f"validation collection {self.validation!r} must be one of the training collections")
        overlap = set(self.train_collections) & set(self.test)
        if overlap:
            raise BadInput(f"collection {sorted(overlap)[0]!r} is both trained on and tested on")


class CrossEncoderTeacher:
    """The full cross-encoder as the ``teacher`` of :func:`ablations.data.training.distillation_groups`."""

    def __init__(self, ce: CrossEncoder):
        self.ce = ce
        self.name = f"cross-encoder:{model_fingerprint(ce)}"

    def score_ids(self, pairs, queries: dict, docs: dict, *, batch_size: int = 64, progress: bool = False):
        return self.ce.score([(queries[q], docs[d]) for q, d in pairs], batch_size=batch_size, progress=progress)


# ------------------------------------------------------------------------------------------ students
class Student:
    """What the loop needs of a student: its scorer, its module, training scores, saving."""

    def __init__(self, cfg: RetrainConfig, mice_cfg: MiceConfig, config_path: Path | None):
        self.kind = cfg.student
        if cfg.student == "mice":
            self.scorer = MiceModel.load(config_path or mice_cfg, weights=cfg.init)
            view = dataclasses.replace(self.scorer.config, max_doc_length=min(cfg.max_doc_length,
                                                                             self.scorer.config.max_doc_length))
            self.train_view = MiceModel(self.scorer.ce, view, plan=self.scorer.plan.shape)
            self.module = self.scorer.ce.model
            self.shape = "split" if "split" in self.scorer.plan.valid else "masked"
        else:
            weights = cfg.init or (str(Path(config_path).parent / mice_cfg.weights)
                                   if mice_cfg.weights and config_path else mice_cfg.base_model)
            self.scorer = LateInteractionScorer.from_cross_encoder(weights, cfg.student, seed=cfg.seed,
                                                                   max_doc_length=mice_cfg.max_doc_length)
            self.module = self.scorer.module
        self.max_doc_length = cfg.max_doc_length

    def scores(self, pairs) -> torch.Tensor:
        if self.kind == "mice":
            return self.train_view.executor.forward(self.train_view.encode(pairs), self.shape)
        return self.scorer.train_scores(pairs, max_doc_length=self.max_doc_length)

    def param_groups(self, cfg: RetrainConfig) -> list[dict]:
        if self.kind == "mice":
            return [{"params": [p for p in self.module.parameters() if p.requires_grad], "lr": cfg.lr}]
        enc = list(self.module.encoder.parameters())
        ids = {id(p) for p in enc}
        return [{"params": enc, "lr": cfg.lr},
                {"params": [p for p in self.module.parameters() if id(p) not in ids], "lr": cfg.head_lr}]

    def save(self, folder: Path) -> None:
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.scorer.save(tmp)
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)


def _validate(scorer: Scorer, module: torch.nn.Module, val_set: RerankSet) -> float:
    module.eval()
    run = rerank(scorer, val_set, batch_size=64, progress=False)
    module.train()
    return float(aggregate(evaluate_runs({"v": run}, val_set))["nDCG@10"].iloc[0])


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ the loop
def retrain(cfg: RetrainConfig, *, progress: bool = True, stop_after: int | None = None,
            groups: list[td.Group] | None = None, val_set: RerankSet | None = None) -> dict:
    """Run (or resume, or skip if finished) a retraining; returns the summary written to ``retrain.json``.

    ``groups`` / ``val_set`` replace the collections (tests); ``stop_after=N`` checkpoints and returns after
    N optimizer steps of this call (what a killed run leaves behind).
    """
    out = Path(cfg.out)
    done = out / "retrain.json"
    if done.exists():
        print(f"already retrained: {out} (delete {done} to retrain)")
        return json.loads(done.read_text())
    started, revision = time.time(), git_revision()  # the code the run started with
    torch.manual_seed(cfg.seed), random.seed(cfg.seed), np.random.seed(cfg.seed)
    config_path = Path(cfg.config)
    mice_cfg = MiceConfig.load(config_path)
    if cfg.student == "mice" and not mice_cfg.score_reads_document():
        raise BadInput(f"MICE configuration {str(config_path)!r} ({mice_cfg.label}): its score cannot depend on the "
                       "document, so there is nothing to retrain; re-export it with a later drop layer")
    student = Student(cfg, mice_cfg, config_path)

    if groups is None:
        from ablations.data.collections import load_collection

        train_q, held_q = td.split_queries(load_collection(cfg.validation).queries, cfg.validation_fraction, cfg.seed)
        held_out = {f"{cfg.validation}:{q}" for q in held_q}
        if val_set is None and cfg.eval_every:
            val_set = td.validation_set(cfg.validation, sorted(held_out), cfg.validation_depth)
        excluded = td.test_passages(cfg.test)
        if cfg.data == "distill":
            teacher = CrossEncoderTeacher(CrossEncoder.from_pretrained(resolve_model(cfg.teacher)))
            groups = td.distillation_groups(cfg.train_collections, exclude_queries=held_out, exclude_docs=excluded,
                                            dev_queries=cfg.dev_queries, groups_per_query=cfg.groups_per_query,
                                            group_size=cfg.group_size, depth=cfg.depth, seed=cfg.seed,
                                            teacher=teacher, progress=progress)
        else:
            groups = td.judged_groups(cfg.train_collections, exclude_queries=held_out, exclude_docs=excluded,
                                      group_size=cfg.group_size, min_positive=cfg.min_positive, seed=cfg.seed)
    per_epoch = len(groups) // cfg.groups_per_step
    if per_epoch == 0:
        raise BadInput(f"{len(groups)} training groups, fewer than --groups-per-step {cfg.groups_per_step}")

    module = student.module
    optimizer = torch.optim.AdamW(student.param_groups(cfg), weight_decay=0.01)
    warmup = max(1, int(cfg.warmup * cfg.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (cfg.steps - s) / max(1, cfg.steps - warmup))))
    ckpt = out / ".checkpoint" / "state.pt"
    best_dir = out / ".best"
    state = {"step": 0, "best": -1.0, "history": [], "losses": [], "elapsed": 0.0, "fixed_before": None}
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        if saved.get("config") != dataclasses.asdict(cfg):
            raise BadInput(f"checkpoint {ckpt} was written with different settings; delete {out} or choose "
                           "another --out")
        module.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        print(f"resuming {out} at step {state['step']}")

    def batch_of(step: int):
        return td.batches(groups, cfg.groups_per_step, cfg.seed, step // per_epoch)[step % per_epoch]

    def loss_of(batch, scores):
        labels = torch.from_numpy(td.as_arrays(batch, "labels")) if batch[0].labels else None
        teacher = torch.from_numpy(td.as_arrays(batch, "teacher")) if batch[0].teacher else None
        return group_loss(cfg.loss, scores.view(len(batch), cfg.group_size), labels, teacher, 1.0)

    def fixed_loss() -> float:  # the first batch, without dropout: the same measurement before and after
        module.eval()
        with torch.no_grad():
            b = batch_of(0)
            value = float(loss_of(b, student.scores([(g.query, d) for g in b for d in g.docs])))
        module.train()
        return value

    module.train()
    if state["fixed_before"] is None:
        state["fixed_before"] = fixed_loss()
    if state["best"] < 0:
        if val_set is not None and cfg.eval_every:
            state["best"] = _validate(student.scorer, module, val_set)
            state["history"].append({"step": 0, "val_ndcg10": state["best"], "loss": None})
        student.save(best_dir)
    steps_this_call = 0
    tick = time.time()
    bar = tqdm(range(state["step"], cfg.steps), desc=f"retrain {cfg.student} ({cfg.loss})", disable=not progress,
               initial=state["step"], total=cfg.steps)
    device = next(module.parameters()).device
    use_bf16 = bf16_enabled(cfg.bf16, device)
    for step in bar:
        batch = batch_of(step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            scores = student.scores([(g.query, d) for g in batch for d in g.docs]).float()
        loss = loss_of(batch, scores)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        state["losses"].append({"step": step + 1, "loss": float(loss.item())})
        state["step"] = step + 1
        bar.set_postfix(loss=f"{np.mean([r['loss'] for r in state['losses'][-20:]]):.4f}")
        last = step + 1 == cfg.steps
        steps_this_call += 1
        interrupt = stop_after is not None and steps_this_call >= stop_after
        if cfg.eval_every and val_set is not None and (state["step"] % cfg.eval_every == 0 or last):
            val = _validate(student.scorer, module, val_set)
            recent = [r["loss"] for r in state["losses"][-cfg.eval_every:]]
            state["history"].append({"step": state["step"], "val_ndcg10": val, "loss": float(np.mean(recent))})
            if val > state["best"]:
                state["best"] = val
                student.save(best_dir)
        elif not cfg.eval_every and last:
            student.save(best_dir)
        if state["step"] % cfg.checkpoint_every == 0 or last or interrupt:
            state["elapsed"] += time.time() - tick
            tick = time.time()
            _save_checkpoint(ckpt, {"config": dataclasses.asdict(cfg), "model": module.state_dict(),
                                    "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                                    "torch_rng": torch.get_rng_state(), "state": state})
        if interrupt and not last:
            bar.close()
            return {"interrupted": True, "step": state["step"]}
    bar.close()
    fixed_after = fixed_loss()
    for f in best_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, out / f.name)
        else:
            shutil.copytree(f, out / f.name, dirs_exist_ok=True)
    summary = {
        "config": dataclasses.asdict(cfg), "student": cfg.student,
        "train_seconds": round(state["elapsed"], 1), "wall_seconds": round(time.time() - started, 1),
        "groups": len(groups), "best_validation_ndcg10": state["best"] if val_set is not None else None,
        "fixed_batch_loss": {"before": state["fixed_before"], "after": fixed_after},
        "history": state["history"], "losses": state["losses"],
        "parameters": student.scorer.num_parameters(),
        "git_revision": revision,
        "environment": environment() | {"torch_threads": torch.get_num_threads(), "bf16": use_bf16},
    }
    pd.DataFrame(state["losses"]).to_csv(out / "losses.csv", index=False)
    pd.DataFrame(state["history"], columns=["step", "val_ndcg10", "loss"]).to_csv(out / "history.csv", index=False)
    atomic_write_text(done, json.dumps(summary, indent=2, default=str) + "\n")
    shutil.rmtree(out / ".checkpoint", ignore_errors=True)
    shutil.rmtree(best_dir, ignore_errors=True)
    return summary


# ------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.retrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="MICE configuration (mice.json, from python -m ablations.export)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, resume, the trained model)")
    p.add_argument("--student", default="mice", help=f"one of {', '.join(STUDENTS)} (default mice)")
    p.add_argument("--init", default=None, help="weights to start from (default: the configuration's)")
    p.add_argument("--teacher", default="reference", help="cross-encoder to distil (default: the reference)")
    p.add_argument("--loss", default="margin-mse", help=f"one of {', '.join(LOSSES)} (default margin-mse)")
    p.add_argument("--data", default=None, help="distill (teacher-scored groups) or judged (labels)")
    defaults = RetrainConfig(out="-", config="-")
    for name in ("steps", "lr", "head_lr", "groups_per_step", "group_size", "dev_queries", "groups_per_query",
                 "depth", "max_doc_length", "eval_every", "checkpoint_every", "seed", "validation_depth", "bf16"):
        value = getattr(defaults, name)
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value, help=f"default {value}")
    p.add_argument("--train-collections", nargs="+", default=defaults.train_collections)
    p.add_argument("--validation", default=defaults.validation)
    p.add_argument("--test", nargs="+", default=defaults.test)
    p.add_argument("--stop-after", type=int, default=None, help="checkpoint and stop after N steps (resume later)")
    p.add_argument("--no-progress", action="store_true")
    return p


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    fields_ = {f.name for f in dataclasses.fields(RetrainConfig)}
    cfg = RetrainConfig(**{k: v for k, v in vars(args).items() if k in fields_})
    summary = retrain(cfg, progress=not args.no_progress, stop_after=args.stop_after)
    if summary.get("interrupted"):
        print(f"stopped at step {summary['step']}; rerun the same command to resume")
        return 0
    fb = summary["fixed_batch_loss"]
    best = summary["best_validation_ndcg10"]
    print(f"{cfg.student}: {summary['groups']} groups, {len(summary['losses'])} steps, fixed-batch loss "
          f"{fb['before']:.4f} → {fb['after']:.4f}, best validation nDCG@10 "
          f"{'–' if best is None else f'{best:.4f}'}, {summary['train_seconds'] / 60:.1f} min")
    print(f"model: {cfg.out}")
    return 0


if __name__ == "__main__":
    main()
