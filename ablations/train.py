"""Train a cross-encoder: distil a teacher, then fine-tune on judged pairs, with early stopping.

Presets (``dl19``: the reference cross-encoder, ``dl20``: its mirror, ``smoke``: a one-minute run) and the
trainer are in :mod:`ablations.training.train`; the loop is :func:`ablations.training.loop.fit`.

Checkpoints every ``checkpoint_every`` steps to ``<out>/.checkpoint``; rerunning the same command resumes
there; a finished run (``<out>/train.json`` present) is not redone.

    python -m ablations.train --preset dl19            # <= 45 min on 2 CPU cores (README: Training)
    python -m ablations.train --preset dl20 --out DIR
    python -m ablations.train --preset bi-dl19          # the first recipe: the bi-encoder teacher
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ablations.paths import shared_dir
from ablations.settings import from_fields
from ablations.training.train import TRAINING_PRESETS, TrainConfig, train
from probe.errors import BadInput, cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="dl19", help=f"one of {', '.join(TRAINING_PRESETS)} (default dl19)")
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: the preset's; reference models go to $MICE_CACHE/models/<name>)",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--teacher",
        default=None,
        help="the scorer distilled from: a cross-encoder name or folder (default: reference, the 12-layer "
        "MS MARCO cross-encoder) or a sentence-transformers bi-encoder (minilm-l6)",
    )
    p.add_argument(
        "--teacher-max-length",
        type=int,
        default=None,
        help="tokens the teacher scores at (default: the student's training length, 128)",
    )
    p.add_argument(
        "--teacher-cache",
        default=None,
        help="teacher-score file to read or write (default: $MICE_CACHE/teacher/<key>.parquet; one made "
        "for another teacher, length or data is refused)",
    )
    p.add_argument(
        "--config", type=Path, default=None, help="JSON file with TrainConfig fields (overrides preset)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: all cores; 1 is steadier when other work shares the CPU)",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.preset not in TRAINING_PRESETS:
        raise BadInput(f"unknown preset {args.preset!r}; expected one of {', '.join(TRAINING_PRESETS)}")
    if args.threads is not None:
        if args.threads < 1:
            raise BadInput(f"--threads {args.threads} must be >= 1")
        torch.set_num_threads(args.threads)
    cfg = TRAINING_PRESETS[args.preset]()
    shared_copy = shared_dir() / "models" / Path(cfg.out).name
    if (
        args.preset != "smoke"
        and not (args.out or args.config or args.seed is not None or args.teacher)
        and (shared_copy / "config.json").is_file()
    ):
        print(f"reference model already present at {shared_copy}; nothing to train")
        return 0
    if args.config:
        try:
            fields = json.loads(args.config.read_text())
        except (OSError, ValueError) as exc:
            raise BadInput(f"config {str(args.config)!r} is not a readable JSON file: {exc}") from None
        cfg = from_fields(TrainConfig, fields, f"config {str(args.config)!r}", base=cfg)
    if args.out:
        cfg.out = args.out
    if args.teacher is not None:
        cfg.teacher = args.teacher
    if args.teacher_max_length is not None:
        if args.teacher_max_length < 8:
            raise BadInput(f"--teacher-max-length {args.teacher_max_length} must be >= 8")
        cfg.teacher_max_length = args.teacher_max_length
    if args.teacher_cache is not None:
        cfg.teacher_cache = args.teacher_cache
    if args.seed is not None:
        cfg.seed = args.seed
    summary = train(cfg, progress=not args.no_progress)
    for row in summary["test"]:
        print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(
        f"model: {cfg.out}  (train {summary['train_seconds'] / 60:.1f} min, "
        f"best validation nDCG@10 {summary['best_validation_ndcg10']:.4f})"
    )
    return 0


if __name__ == "__main__":
    main()
