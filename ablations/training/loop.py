"""The training loop the trainer and the retrainer share, and the pieces both use.

:func:`fit` runs (or resumes, or skips when finished) one training run, top to bottom:

1. a finished run (its record, e.g. ``<out>/train.json``, present) is not redone; otherwise seed everything
   and call ``setup()`` for the :class:`Run` — the model, its phases, its validation set, the two hooks;
2. resume from ``<out>/.checkpoint/state.pt`` if there is one (refused if it was written with other settings);
3. each :class:`Phase` not finished yet: build its groups, AdamW with linear warm-up and decay, then one
   optimizer step per batch, validation nDCG@10 every ``eval_every`` steps (the best model is kept in
   ``<out>/.best``), early stopping after ``patience`` evaluations without gain, a checkpoint every
   ``checkpoint_every`` steps;
4. the end: the run's own summary fields (``finish``), the best model copied into ``<out>``, the record,
   ``history.csv`` and ``losses.csv`` written, the checkpoint and ``.best`` removed.

What differs between the trainer (:mod:`ablations.training.train`: a cross-encoder, several named stages,
test collections evaluated at the end) and the retrainer (:mod:`ablations.training.retrain`: a MICE or
late-interaction student, one unnamed phase, a fixed-batch loss before and after) is in :class:`Run` and
:class:`Phase`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ablations.data import training as td
from ablations.data.collections import RerankSet
from ablations.evaluation.measures import aggregate, evaluate_runs
from ablations.evaluation.rerank import rerank
from ablations.results import atomic_write_text, environment, git_revision
from probe.errors import BadInput
from probe.progress import bar as progress_bar

LOSSES = ("bce", "mse", "lce", "margin-mse", "kl")


# ----------------------------------------------------------------------------- losses and steps
def group_loss(loss: str, scores: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor, scale: float):
    """Loss for a ``(groups, group_size)`` score matrix."""
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(scores, (labels > 0).float())
    if loss == "mse":
        return F.mse_loss(scores, labels)
    if loss == "lce":  # the positive is document 0 of every group
        return F.cross_entropy(scores, torch.zeros(len(scores), dtype=torch.long, device=scores.device))
    if loss == "margin-mse":  # margins against document 0, student vs scaled teacher
        return F.mse_loss(scores[:, :1] - scores[:, 1:], scale * (teacher[:, :1] - teacher[:, 1:]))
    if loss == "kl":
        return F.kl_div(
            F.log_softmax(scores, -1),
            F.log_softmax(scale * teacher, -1),
            log_target=True,
            reduction="batchmean",
        )
    raise BadInput(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")


def pairs_of(batch: list[td.Group]) -> list[tuple[str, str]]:
    """The (query, document) pairs of a batch of groups, group by group."""
    return [(g.query, d) for g in batch for d in g.docs]


def batch_loss(loss: str, batch: list[td.Group], scores: torch.Tensor, scale: float) -> torch.Tensor:
    """:func:`group_loss` of the scores of ``pairs_of(batch)``, with the batch's labels and teacher scores."""
    labels = torch.from_numpy(td.as_arrays(batch, "labels")) if batch[0].labels else None
    teacher = torch.from_numpy(td.as_arrays(batch, "teacher")) if batch[0].teacher else None
    return group_loss(loss, scores.view(len(batch), -1), labels, teacher, scale)


def optimizer_step(loss: torch.Tensor, params, optimizer: torch.optim.Optimizer) -> float:
    """Backward, gradients clipped to norm 1, one optimizer step, gradients cleared; returns the loss."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def bf16_enabled(setting: str, device: torch.device) -> bool:
    """Whether to autocast to bfloat16: "auto" means only where it is fast (CUDA with bf16, or a CPU with
    AVX-512 BF16 / AMX; elsewhere it is emulated and slower)."""
    if setting != "auto":
        return setting == "on"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


# ----------------------------------------------------------------------------- validation and files
def validation_ndcg10(scorer, module: torch.nn.Module, val_set: RerankSet) -> float:
    """Mean nDCG@10 of ``scorer`` re-ranking ``val_set``, with ``module`` in eval mode (dropout off)."""
    module.eval()
    run = rerank(scorer, val_set, batch_size=64, progress=False)
    module.train()
    return float(aggregate(evaluate_runs({"v": run}, val_set))["nDCG@10"].iloc[0])


def save_model(scorer, folder: Path) -> None:
    """``scorer.save(folder)``, atomically: a killed run leaves the previous folder or the new one."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    scorer.save(tmp)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- what a run is made of
@dataclass
class Phase:
    """Optimizer steps on one set of groups with one loss and one schedule (a stage of the trainer)."""

    name: str | None  # tags history/loss rows and messages; None: the run's only phase, rows carry no stage
    label: str  # the progress bar's
    steps: int
    lr: float
    warmup: float  # fraction of steps
    groups_per_step: int
    params: Any  # parameters or parameter groups for AdamW
    groups: Callable[[], list[td.Group]]  # called when the phase starts (a resumed run skips finished phases)
    step: Callable[[list[td.Group], torch.optim.Optimizer], float]  # one optimizer step on a batch; its loss


@dataclass
class Run:
    """What :func:`fit` trains, and where the trainer and the retrainer differ."""

    scorer: Any  # what is validated (:func:`rerank`) and saved as the best model (``.save(folder)``)
    module: torch.nn.Module  # the trained weights: train/eval mode, checkpointed state dict
    phases: list[Phase]
    val_set: RerankSet | None  # None: no validation, and the last step's model is the one kept
    eval_every: int
    checkpoint_every: int
    patience: int | None  # evaluations without gain before a phase stops; None: never stop early
    bf16: bool  # recorded in the summary's environment
    finish: Callable[[dict, Path], dict]  # (state, best folder) -> the run's own summary fields (may write)
    first: Callable[[dict], None] | None = None  # a fresh run only, before step 1: adds to the state


# ----------------------------------------------------------------------------- the loop
def fit(
    setup: Callable[[], Run],
    *,
    out: Path,
    record: str,
    verb: str,
    config: dict,
    seed: int,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Run (or resume, or skip if finished) a training run; returns the summary written to ``out / record``.

    ``config`` (the settings as a dict) is stored with every checkpoint: a checkpoint written with other
    settings is refused. ``stop_after=N`` checkpoints and returns ``{"interrupted": True, ...}`` after N
    optimizer steps of this call (what a killed run leaves behind); calling again resumes from there.
    """
    done = out / record
    if done.exists():
        print(f"already {verb}: {out} (delete {done} to retrain)")
        return json.loads(done.read_text())
    started, revision = time.time(), git_revision()  # the code the run started with
    torch.manual_seed(seed), random.seed(seed), np.random.seed(seed)
    run = setup()
    module, validating = run.module, run.val_set is not None
    staged = run.phases[0].name is not None  # the trainer's named stages; the retrainer's one phase is not

    ckpt, best_dir = out / ".checkpoint" / "state.pt", out / ".best"
    state = {"stage": 0, "step": 0, "best": -1.0, "history": [], "losses": [], "elapsed": 0.0}
    saved = torch.load(ckpt, weights_only=False) if ckpt.exists() else None
    if saved is not None:
        if saved.get("config") != config:
            raise BadInput(
                f"checkpoint {ckpt} was written with different settings; delete {out} or choose another --out"
            )
        module.load_state_dict(saved["model"])
        state = saved["state"]
        where = f"stage {state['stage']} " if staged else ""
        print(f"resuming {out} at {where}step {state['step']}")
    module.train()
    if saved is None and run.first is not None:
        run.first(state)

    def checkpoint(optimizer=None, schedule=None) -> None:
        extra = (
            {}
            if optimizer is None
            else {
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "torch_rng": torch.get_rng_state(),
            }
        )
        save_checkpoint(ckpt, {"config": config, "model": module.state_dict(), **extra, "state": state})

    steps_this_call = 0
    for index, phase in enumerate(run.phases):
        if index < state["stage"]:
            continue
        tag = {} if phase.name is None else {"stage": phase.name}
        groups = phase.groups()
        per_epoch = len(groups) // phase.groups_per_step
        optimizer = torch.optim.AdamW(phase.params, lr=phase.lr, weight_decay=0.01)
        warmup, steps = max(1, int(phase.warmup * phase.steps)), phase.steps
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
        )
        if saved is not None and state["step"] > 0 and "optimizer" in saved:  # resuming inside this phase
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
            torch.set_rng_state(saved["torch_rng"])
        if state["best"] < 0:  # the untrained model's validation score is the first point of the curve
            if validating:
                state["best"] = validation_ndcg10(run.scorer, module, run.val_set)
                state["history"].append({**tag, "step": 0, "val_ndcg10": state["best"], "loss": None})
            save_model(run.scorer, best_dir)

        losses = [r["loss"] for r in state["losses"][len(state["losses"]) - state["step"] :]]  # this phase's
        stale, tick = 0, time.time()
        bar = progress_bar(
            range(state["step"], steps),
            desc=phase.label,
            disable=not progress,
            initial=state["step"],
            total=steps,
        )
        for step in bar:
            batch = td.batches(groups, phase.groups_per_step, seed, step // per_epoch)[step % per_epoch]
            losses.append(phase.step(batch, optimizer))
            schedule.step()
            state["losses"].append({**tag, "step": step + 1, "loss": losses[-1]})
            state["step"] = step + 1
            shown = {"loss": f"{np.mean(losses[-20:]):.4f}"}
            bar.set_postfix(shown | {"best": f"{state['best']:.4f}"} if validating else shown)
            last = step + 1 == steps
            steps_this_call += 1
            interrupt = stop_after is not None and steps_this_call >= stop_after
            if validating and (state["step"] % run.eval_every == 0 or last):
                val = validation_ndcg10(run.scorer, module, run.val_set)
                state["history"].append(
                    {
                        **tag,
                        "step": state["step"],
                        "val_ndcg10": val,
                        "loss": float(np.mean(losses[-run.eval_every :])),
                    }
                )
                if val > state["best"]:
                    state["best"], stale = val, 0
                    save_model(run.scorer, best_dir)
                else:
                    stale += 1
            elif not validating and last:
                save_model(run.scorer, best_dir)
            stopping = run.patience is not None and stale >= run.patience
            if state["step"] % run.checkpoint_every == 0 or last or stopping or interrupt:
                state["elapsed"] += time.time() - tick
                tick = time.time()
                checkpoint(optimizer, schedule)
            if interrupt and not last:
                bar.close()
                return {"interrupted": True, **tag, "step": state["step"]}
            if stopping:
                print(
                    f"{phase.name}: no validation gain in {run.patience} evaluations, "
                    f"stopping at step {step + 1}"
                )
                break
        bar.close()
        state["elapsed"] += time.time() - tick
        state["stage"], state["step"], saved = index + 1, 0, None
        checkpoint()  # a finished phase (stopped early or not) is not rerun on resume

    # The end: the run's own fields, the selected model (the best validation nDCG@10) into the output folder.
    extra = run.finish(state, best_dir)
    for f in best_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, out / f.name)
        else:
            shutil.copytree(f, out / f.name, dirs_exist_ok=True)
    summary = {
        "config": config,
        "train_seconds": round(state["elapsed"], 1),
        "wall_seconds": round(time.time() - started, 1),
        "best_validation_ndcg10": state["best"] if validating else None,
        "history": state["history"],
        "losses": state["losses"],
        **extra,
        "git_revision": revision,
        "environment": environment() | {"torch_threads": torch.get_num_threads(), "bf16": run.bf16},
    }
    columns = (["stage"] if staged else []) + ["step", "val_ndcg10", "loss"]
    pd.DataFrame(state["history"], columns=columns).to_csv(out / "history.csv", index=False)
    pd.DataFrame(state["losses"]).to_csv(out / "losses.csv", index=False)
    atomic_write_text(done, json.dumps(summary, indent=2, default=str) + "\n")
    shutil.rmtree(out / ".checkpoint", ignore_errors=True)
    shutil.rmtree(best_dir, ignore_errors=True)
    return summary
