"""Retrain a MICE model (or a late-interaction baseline) from the cross-encoder's weights.

    python -m ablations.retrain --config mice.json --out runs/mice-l2+3             # MICE student
    python -m ablations.retrain --config mice.json --student maxsim --out runs/maxsim # baselines, same recipe
    python -m ablations.retrain --config mice.json --loss lce --out runs/mice-labels  # plain labels

The student is fine-tuned under its mask, distilling the full cross-encoder (``--loss margin-mse``, the
default) or on plain labels (``--loss lce``). Library: :mod:`ablations.training.retrain` (the recipe) and
:func:`ablations.training.loop.fit` (the loop the trainer shares).

Checkpoints every ``--checkpoint-every`` steps to ``<out>/.checkpoint/state.pt``; rerunning the same
command resumes there; a finished run (``<out>/retrain.json``) is not redone. The output folder loads
with :meth:`ablations.mice.MiceModel.load` (or :meth:`LateInteractionScorer.load` for the baselines).
"""

from __future__ import annotations

import argparse
import dataclasses

from ablations.training.loop import LOSSES
from ablations.training.retrain import STUDENTS, RetrainConfig, retrain
from probe.errors import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.retrain", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config", required=True, help="MICE configuration (mice.json, from python -m ablations.export)"
    )
    p.add_argument("--out", required=True, help="output folder (checkpoints, resume, the trained model)")
    p.add_argument("--student", default="mice", help=f"one of {', '.join(STUDENTS)} (default mice)")
    p.add_argument("--init", default=None, help="weights to start from (default: the configuration's)")
    p.add_argument("--teacher", default="reference", help="cross-encoder to distil (default: the reference)")
    p.add_argument(
        "--teacher-cache",
        default=None,
        help="teacher-score file to read or write (default: $MICE_CACHE/teacher/<key>.parquet); one made "
        "for another teacher, max length or data is refused",
    )
    p.add_argument("--loss", default="margin-mse", help=f"one of {', '.join(LOSSES)} (default margin-mse)")
    p.add_argument("--data", default=None, help="distill (teacher-scored groups) or judged (labels)")
    p.add_argument(
        "--cls-weight",
        type=float,
        default=0.0,
        help="MICE only: also distil the teacher's final [CLS] state (weight of its MSE; default 0: "
        "scores only)",
    )
    p.add_argument(
        "--encoder-layers",
        type=int,
        default=None,
        help="maxsim / lite only: encode with the backbone's first N layers (default: all; e.g. 7, the "
        "layers MICE-l4+3 keeps of 12)",
    )
    p.add_argument(
        "--pseudo-queries",
        type=int,
        default=0,
        help="also N GPL-style groups: a query cropped from a training-pool passage, that passage and "
        "bm25s hard negatives, scored by the teacher (default 0: none)",
    )
    defaults = RetrainConfig(out="-", config="-")
    for name in (
        "steps",
        "lr",
        "head_lr",
        "groups_per_step",
        "group_size",
        "dev_queries",
        "groups_per_query",
        "depth",
        "max_doc_length",
        "eval_every",
        "checkpoint_every",
        "seed",
        "validation_depth",
        "bf16",
    ):
        value = getattr(defaults, name)
        p.add_argument(
            "--" + name.replace("_", "-"), type=type(value), default=value, help=f"default {value}"
        )
    p.add_argument("--train-collections", nargs="+", default=defaults.train_collections)
    p.add_argument("--validation", default=defaults.validation)
    p.add_argument("--test", nargs="+", default=defaults.test)
    p.add_argument(
        "--stop-after", type=int, default=None, help="checkpoint and stop after N steps (resume later)"
    )
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
    print(
        f"{cfg.student}: {summary['groups']} groups, {len(summary['losses'])} steps, fixed-batch loss "
        f"{fb['before']:.4f} → {fb['after']:.4f}, best validation nDCG@10 "
        f"{'–' if best is None else f'{best:.4f}'}, {summary['train_seconds'] / 60:.1f} min"
    )
    print(f"model: {cfg.out}")
    return 0


if __name__ == "__main__":
    main()
