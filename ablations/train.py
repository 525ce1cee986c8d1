"""Train a cross-encoder: distil a teacher, then fine-tune on judged pairs, with early stopping.

The whole loop is :func:`train`, readable top to bottom. Settings are one dataclass (:class:`TrainConfig`)
with named presets:

- ``dl19`` — the reference cross-encoder. Starts from all-MiniLM-L6-v2 with a fresh head; stage 1 distils
  the bi-encoder teacher (margin-MSE) on MS MARCO dev-small + DL20/DL21 queries with bm25s candidates
  from the DL20 + DL21 passage pools; stage 2 fine-tunes on DL20 + DL21 judged pairs (localized
  contrastive loss, BM25 hard negatives). Early stopping and model selection on held-out DL20 queries.
  DL 2019 is never trained or selected on; it is evaluated once at the end.
- ``dl20`` — the mirror: trains on DL19 + DL21, validates on held-out DL19 queries, tests on DL 2020.
- ``smoke`` — a one-minute run of the same code path (for CI).

Checkpoints every ``checkpoint_every`` steps to ``<out>/.checkpoint``; rerunning the same command resumes
there; a finished run (``<out>/train.json`` present) is not redone.

    python -m ablations.train --preset dl19            # 31-45 min on 2 CPU cores (README: Training)
    python -m ablations.train --preset dl20 --out DIR
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
import torch.nn.functional as F
from tqdm.auto import tqdm

from probe.errors import BadInput, cli
from probe.model import CrossEncoder

from ablations.data import training as td
from ablations.data.collections import load_collection
from ablations.evaluation.measures import aggregate, evaluate_runs
from ablations.evaluation.rerank import rerank
from ablations.paths import REFERENCE_MODELS, resolve_model, shared_dir, trained_model_dir
from ablations.results import atomic_write_text, environment, git_revision, write_table

LOSSES = ("bce", "mse", "lce", "margin-mse", "kl")


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
    teacher_scale: float = 10.0  # cosine margins are ~0.1; scale them to logit range
    # judged data
    min_positive: int = 2


@dataclass
class TrainConfig:
    out: str
    init_model: str = "minilm-l6"
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
    teacher: str = "minilm-l6"
    # speed: bfloat16 autocast where the hardware has it ("auto"), word embeddings frozen (half the
    # parameters, rarely-seen rows), and each step's pairs scored in length-sorted micro-batches (less padding)
    bf16: str = "auto"  # "auto", "on" or "off"
    freeze_word_embeddings: bool = True
    # the embeddings and the lowest ``frozen_layers`` encoder layers keep the pretrained weights, and no backward
    # pass runs through them: 3 of MiniLM-L6's 6 layers make a step 1.5x faster on 2 CPU cores, but cost the DL19
    # preset its margin over BM25 (README), so the presets train every layer
    frozen_layers: int = 0
    micro_batches: int = 4

    def __post_init__(self):
        self.stages = [s if isinstance(s, Stage) else Stage(**s) for s in self.stages]
        for s in self.stages:
            if s.loss not in LOSSES:
                raise BadInput(f"stage {s.name!r}: unknown loss {s.loss!r}; expected one of {', '.join(LOSSES)}")
            if s.data not in ("distill", "judged"):
                raise BadInput(f"stage {s.name!r}: data {s.data!r} must be 'distill' or 'judged'")
        overlap = set(self.train_collections) & set(self.test)
        if overlap:
            raise BadInput(f"collection {sorted(overlap)[0]!r} is both trained on and tested on")
        if self.bf16 not in ("auto", "on", "off"):
            raise BadInput(f"bf16 {self.bf16!r} must be 'auto', 'on' or 'off'")
        if self.frozen_layers < 0:
            raise BadInput(f"frozen_layers {self.frozen_layers} must be >= 0")
        if self.micro_batches < 1:
            raise BadInput(f"micro_batches {self.micro_batches} must be >= 1")
        if self.validation not in self.train_collections:
            raise BadInput(f"validation collection {self.validation!r} must be one of the training collections")


def _reference(test: str, train: list[str]) -> TrainConfig:
    return TrainConfig(
        out=str(trained_model_dir(REFERENCE_MODELS[f"reference-{test}"])),
        train_collections=train, validation=train[0], test=[test],
        stages=[Stage("distill", "margin-mse", "distill", steps=900, lr=1e-4, dev_queries=2000),
                Stage("finetune", "lce", "judged", steps=100, lr=2e-5)],
    )


PRESETS = {
    "dl19": lambda: _reference("dl19", ["dl20", "dl21"]),
    "dl20": lambda: _reference("dl20", ["dl19", "dl21"]),
    "smoke": lambda: TrainConfig(
        out="runs/smoke-model", test=["dl19"], validation_depth=20, eval_every=15, checkpoint_every=10,
        stages=[Stage("distill", "margin-mse", "distill", steps=30, lr=1e-4, dev_queries=20, groups_per_query=1,
                      group_size=4),
                Stage("finetune", "lce", "judged", steps=10, lr=1e-5, group_size=4)],
    ),
}


# ----------------------------------------------------------------------------- losses
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
        return F.kl_div(F.log_softmax(scores, -1), F.log_softmax(scale * teacher, -1), log_target=True,
                        reduction="batchmean")
    raise BadInput(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")


def bf16_enabled(setting: str, device: torch.device) -> bool:
    """Whether to autocast to bfloat16: "auto" means only where it is fast (CUDA with bf16, or a CPU with
    AVX-512 BF16 / AMX; elsewhere it is emulated and slower)."""
    if setting != "auto":
        return setting == "on"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def score_pairs(scorer: CrossEncoder, pairs: list, micro_batches: int, bf16: bool) -> torch.Tensor:
    """Training-mode scores of ``pairs`` in their order, computed in ``micro_batches`` length-sorted chunks."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    with torch.autocast(scorer.device.type, dtype=torch.bfloat16, enabled=bf16):
        scores = torch.cat([scorer.forward(scorer.encode([pairs[i] for i in chunk])).float()
                            for chunk in np.array_split(np.array(order), min(micro_batches, len(pairs)))])
    return scores[torch.argsort(torch.as_tensor(order, device=scores.device))]  # back to the pairs' order


def train_step(scorer: CrossEncoder, batch: list, stage: Stage, trainable: list, optimizer, micro_batches: int,
               bf16: bool) -> float:
    """One optimizer step on a batch of groups (stage's loss, gradients clipped to norm 1); returns the loss."""
    pairs = [(g.query, d) for g in batch for d in g.docs]
    scores = score_pairs(scorer, pairs, micro_batches, bf16).view(len(batch), stage.group_size)
    labels = torch.from_numpy(td.as_arrays(batch, "labels")) if batch[0].labels else None
    teacher = torch.from_numpy(td.as_arrays(batch, "teacher")) if batch[0].teacher else None
    loss = group_loss(stage.loss, scores, labels, teacher, stage.teacher_scale)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


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


# ------------------------------------------------------------------------- checkpoints
def _save_model_atomic(scorer: CrossEncoder, folder: Path) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    scorer.save(tmp)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _validate(scorer: CrossEncoder, val_set) -> float:
    scorer.model.eval()
    run = rerank(scorer, val_set, batch_size=64, progress=False)
    score = float(aggregate(evaluate_runs({"v": run}, val_set))["nDCG@10"].iloc[0])
    scorer.model.train()
    return score


# ------------------------------------------------------------------------------ train
def train(cfg: TrainConfig, *, progress: bool = True, stop_after: int | None = None) -> dict:
    """Run (or resume, or skip if finished) a training run; returns the summary written to train.json.

    ``stop_after=N`` checkpoints and returns ``{"interrupted": True}`` after N optimizer steps of this call
    (what a killed run leaves behind); calling again resumes from that checkpoint.
    """
    out = Path(cfg.out)
    done = out / "train.json"
    if done.exists():
        print(f"already trained: {out} (delete {done} to retrain)")
        return json.loads(done.read_text())
    started, revision = time.time(), git_revision()  # the code the run started with
    torch.manual_seed(cfg.seed), random.seed(cfg.seed), np.random.seed(cfg.seed)

    scorer = CrossEncoder.from_pretrained(resolve_model(cfg.init_model), new_head=True, max_length=cfg.max_length)
    freeze(scorer.model, cfg.frozen_layers, cfg.freeze_word_embeddings)
    use_bf16 = bf16_enabled(cfg.bf16, scorer.device)
    val_rs = load_collection(cfg.validation)
    train_q, held_q = td.split_queries(val_rs.queries, cfg.validation_fraction, cfg.seed)
    held_out = {f"{cfg.validation}:{q}" for q in held_q}
    val_set = td.validation_set(cfg.validation, sorted(held_out), cfg.validation_depth)
    excluded = td.test_passages(cfg.test)  # no test-collection passage is ever trained on

    ckpt_path = out / ".checkpoint" / "state.pt"
    best_dir = out / ".best"
    state = {"stage": 0, "step": 0, "best": -1.0, "history": [], "losses": [], "elapsed": 0.0}
    resumed = ckpt_path.exists()
    if resumed:
        saved = torch.load(ckpt_path, weights_only=False)
        if saved.get("config") != dataclasses.asdict(cfg):
            raise BadInput(f"checkpoint {ckpt_path} was written with different settings; "
                           f"delete {out} or choose another --out")
        scorer.model.load_state_dict(saved["model"])
        state = saved["state"]
        print(f"resuming {out} at stage {state['stage']} step {state['step']}")
    scorer.model.train()
    steps_this_call = 0

    for stage_idx, stage in enumerate(cfg.stages):
        if stage_idx < state["stage"]:
            continue
        if stage.data == "distill":
            from ablations.data.teacher import BiEncoder

            groups = td.distillation_groups(cfg.train_collections, exclude_queries=held_out, exclude_docs=excluded,
                                            dev_queries=stage.dev_queries,
                                            groups_per_query=stage.groups_per_query, group_size=stage.group_size,
                                            depth=stage.depth, seed=cfg.seed, teacher=BiEncoder(cfg.teacher),
                                            progress=progress)
        else:
            groups = td.judged_groups(cfg.train_collections, exclude_queries=held_out, exclude_docs=excluded,
                                      group_size=stage.group_size, min_positive=stage.min_positive, seed=cfg.seed)
        per_epoch = len(groups) // stage.groups_per_step
        if per_epoch == 0:
            raise BadInput(f"stage {stage.name!r} has {len(groups)} groups, fewer than groups_per_step")
        trainable = [p for p in scorer.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=stage.lr, weight_decay=0.01)
        warmup = max(1, int(stage.warmup * stage.steps))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min((s + 1) / warmup, max(0.0, (stage.steps - s) / max(1, stage.steps - warmup))))
        if resumed and state["step"] > 0 and "optimizer" in saved:
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
            torch.set_rng_state(saved["torch_rng"])
        if state["best"] < 0:  # the untrained model's validation score is the first point of the curve
            state["best"] = _validate(scorer, val_set)
            state["history"].append({"stage": stage.name, "step": 0, "val_ndcg10": state["best"], "loss": None})
            _save_model_atomic(scorer, best_dir)
        stale = 0
        bar = tqdm(range(state["step"], stage.steps), desc=f"{stage.name} ({stage.loss})", disable=not progress,
                   initial=state["step"], total=stage.steps)
        losses = []
        tick = time.time()
        for step in bar:
            epoch_batches = td.batches(groups, stage.groups_per_step, cfg.seed, step // per_epoch)
            batch = epoch_batches[step % per_epoch]
            losses.append(train_step(scorer, batch, stage, trainable, optimizer, cfg.micro_batches, use_bf16))
            schedule.step()
            state["losses"].append({"stage": stage.name, "step": step + 1, "loss": losses[-1]})
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", best=f"{state['best']:.4f}")
            state["step"] = step + 1
            last = step + 1 == stage.steps
            steps_this_call += 1
            interrupt = stop_after is not None and steps_this_call >= stop_after
            if state["step"] % cfg.eval_every == 0 or last:
                val = _validate(scorer, val_set)
                state["history"].append({"stage": stage.name, "step": state["step"], "val_ndcg10": val,
                                         "loss": float(np.mean(losses[-cfg.eval_every:]))})
                if val > state["best"]:
                    state["best"], stale = val, 0
                    _save_model_atomic(scorer, best_dir)
                else:
                    stale += 1
            if state["step"] % cfg.checkpoint_every == 0 or last or stale >= cfg.patience or interrupt:
                state["elapsed"] += time.time() - tick
                tick = time.time()
                _save_checkpoint(ckpt_path, {
                    "config": dataclasses.asdict(cfg), "model": scorer.model.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "torch_rng": torch.get_rng_state(), "state": state})
            if interrupt and not last:
                bar.close()
                return {"interrupted": True, "stage": stage.name, "step": state["step"]}
            if stale >= cfg.patience:
                print(f"{stage.name}: no validation gain in {cfg.patience} evaluations, stopping at step {step + 1}")
                break
        bar.close()
        state["elapsed"] += time.time() - tick
        state["stage"], state["step"], resumed = stage_idx + 1, 0, False
        _save_checkpoint(ckpt_path, {"config": dataclasses.asdict(cfg), "model": scorer.model.state_dict(),
                                     "state": state})

    # The selected model (best validation nDCG@10) becomes the output folder.
    best = CrossEncoder.from_pretrained(best_dir)
    for f in best_dir.iterdir():
        shutil.copy2(f, out / f.name)
    test_rows = []
    for name in cfg.test:
        rs = load_collection(name)
        runs = {"bm25": rs.candidates[["query_id", "doc_id", "score"]],
                "cross-encoder": rerank(best, rs, progress=progress)}
        test_rows.append(evaluate_runs(runs, rs))
    table = pd.concat(test_rows, ignore_index=True) if test_rows else pd.DataFrame(
        columns=["collection", "run", "query_id", "measure", "value"])
    summary = {
        "config": dataclasses.asdict(cfg),
        "train_seconds": round(state["elapsed"], 1),
        "wall_seconds": round(time.time() - started, 1),
        "best_validation_ndcg10": state["best"],
        "history": state["history"],
        "losses": state["losses"],
        "test": aggregate(table).to_dict(orient="records") if len(table) else [],
        "git_revision": revision,
        "environment": environment() | {"torch_threads": torch.get_num_threads(), "bf16": use_bf16},
    }
    write_table(table, out, "test_metrics", {"schema_version": 1, "kind": "train-test", "model": str(out)})
    pd.DataFrame(state["history"]).to_csv(out / "history.csv", index=False)
    pd.DataFrame(state["losses"]).to_csv(out / "losses.csv", index=False)
    atomic_write_text(done, json.dumps(summary, indent=2, default=str) + "\n")
    shutil.rmtree(out / ".checkpoint", ignore_errors=True)
    shutil.rmtree(best_dir, ignore_errors=True)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="dl19", help=f"one of {', '.join(PRESETS)} (default dl19)")
    p.add_argument("--out", default=None, help="output folder (default: the preset's; reference models go to "
                   "$MICE_CACHE/models/<name>)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--config", type=Path, default=None, help="JSON file with TrainConfig fields (overrides preset)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: all cores; 1 is steadier when other work shares the CPU)")
    p.add_argument("--no-progress", action="store_true")
    return p


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.preset not in PRESETS:
        raise BadInput(f"unknown preset {args.preset!r}; expected one of {', '.join(PRESETS)}")
    if args.threads is not None:
        if args.threads < 1:
            raise BadInput(f"--threads {args.threads} must be >= 1")
        torch.set_num_threads(args.threads)
    cfg = PRESETS[args.preset]()
    shared_copy = shared_dir() / "models" / Path(cfg.out).name
    if args.preset in ("dl19", "dl20") and not (args.out or args.config or args.seed is not None) \
            and (shared_copy / "config.json").is_file():
        print(f"reference model already present at {shared_copy}; nothing to train")
        return 0
    if args.config:
        try:
            fields = json.loads(args.config.read_text())
        except (OSError, ValueError) as exc:
            raise BadInput(f"config {str(args.config)!r} is not a readable JSON file: {exc}") from None
        cfg = TrainConfig(**(dataclasses.asdict(cfg) | fields))
    if args.out:
        cfg.out = args.out
    if args.seed is not None:
        cfg.seed = args.seed
    summary = train(cfg, progress=not args.no_progress)
    for row in summary["test"]:
        print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(f"model: {cfg.out}  (train {summary['train_seconds'] / 60:.1f} min, "
          f"best validation nDCG@10 {summary['best_validation_ndcg10']:.4f})")
    return 0


if __name__ == "__main__":
    main()
