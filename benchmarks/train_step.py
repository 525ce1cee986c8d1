"""Trainer step time: frozen lower layers against the whole encoder trained, same batches, same run.

    python benchmarks/train_step.py --preset dl19 --frozen 3 --steps 8 --rounds 3 --threads 2

Both arms start from the preset's initial model (all-MiniLM-L6-v2 + a fresh head) with the preset's
settings (max length, micro-batches, bf16 setting, frozen word embeddings) and run real optimizer steps of
the preset's size (4 groups × 8 passages) on the same judged-pair groups of the preset's training
collections (localized contrastive loss: no teacher to embed, and a pair costs the same whatever its loss).
Rounds alternate which arm goes first; the first step of every round is a warm-up and not timed. Prints the
median seconds per step of each arm and their ratio (whole ÷ frozen; > 1 means freezing is faster).

Exits 0 (the ratio is a measurement, not a test); ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a clone without installing the package
    sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    from probe.errors import cli

    return cli(_main)(argv)


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/train_step.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="dl19", help="training preset whose settings and data are used")
    p.add_argument("--frozen", type=int, default=3, help="frozen lower layers of the frozen arm (default 3)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per arm and round (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, alternating the arms' order (default 3)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    return _run(p.parse_args(argv))


def _run(args) -> int:
    import torch

    from ablations.data import training as td
    from ablations.data.collections import load_collection
    from ablations.paths import resolve_model
    from ablations.results import atomic_write_text, environment
    from ablations.training.loop import bf16_enabled
    from ablations.training.train import TRAINING_PRESETS as PRESETS
    from ablations.training.train import freeze, train_step
    from probe.errors import BadInput
    from probe.model import CrossEncoder

    if args.preset not in PRESETS:
        raise BadInput(f"unknown preset {args.preset!r}; expected one of {', '.join(PRESETS)}")
    if args.steps < 1 or args.rounds < 1 or args.threads < 1:
        raise BadInput("--steps, --rounds and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    cfg = PRESETS[args.preset]()
    stage = next(s for s in cfg.stages if s.data == "judged")  # the preset's judged-pair (lce) stage
    frozen = args.frozen
    if frozen < 1:
        raise BadInput(f"--frozen {frozen}: the frozen arm needs at least one frozen layer")
    held = {
        f"{cfg.validation}:{q}"
        for q in td.split_queries(load_collection(cfg.validation).queries, cfg.validation_fraction, cfg.seed)[
            1
        ]
    }
    groups = td.judged_groups(
        cfg.train_collections,
        exclude_queries=held,
        group_size=stage.group_size,
        min_positive=stage.min_positive,
        seed=cfg.seed,
        exclude_docs=td.test_passages(cfg.test),
    )
    batches = td.batches(groups, stage.groups_per_step, cfg.seed, 0)
    needed = args.rounds * (args.steps + 1)
    if len(batches) < needed:
        raise BadInput(f"{len(batches)} batches of judged groups, fewer than the {needed} the run needs")

    arms = {}
    for name, layers in (("whole", 0), (f"frozen-{frozen}", frozen)):
        torch.manual_seed(cfg.seed)
        scorer = CrossEncoder.from_pretrained(
            resolve_model(cfg.init_model), new_head=True, max_length=cfg.max_length
        )
        freeze(scorer.model, layers, cfg.freeze_word_embeddings)
        scorer.model.train()
        trainable = [q for q in scorer.model.parameters() if q.requires_grad]
        arms[name] = (scorer, trainable, torch.optim.AdamW(trainable, lr=stage.lr, weight_decay=0.01))
    bf16 = bf16_enabled(cfg.bf16, next(iter(arms.values()))[0].device)

    def step(name, batch) -> float:
        scorer, trainable, optimizer = arms[name]
        start = time.perf_counter()
        train_step(scorer, batch, stage, trainable, optimizer, cfg.micro_batches, bf16)
        return time.perf_counter() - start

    times = {name: [] for name in arms}
    for r in range(args.rounds):
        chunk = batches[r * (args.steps + 1) : (r + 1) * (args.steps + 1)]
        for name in list(arms) if r % 2 == 0 else list(arms)[::-1]:
            step(name, chunk[0])  # warm-up
            times[name].extend(step(name, b) for b in chunk[1:])
    med = {name: statistics.median(t) for name, t in times.items()}
    whole, fast = med["whole"], med[f"frozen-{frozen}"]
    n_params = {name: sum(q.numel() for q in arm[1]) for name, arm in arms.items()}
    print(
        f"preset {args.preset}: {len(batches[0]) * stage.group_size} pairs per step, "
        f"max length {cfg.max_length}, bf16 {bf16}, torch threads {torch.get_num_threads()}, "
        f"{args.rounds} rounds × {args.steps} steps per arm"
    )
    for name in arms:
        print(f"  {name:10s} {med[name]:.3f} s/step (median)   trainable parameters {n_params[name]:,}")
    print(f"  ratio whole ÷ frozen-{frozen}: {whole / fast:.2f}x")
    if args.json:
        report = {
            "preset": args.preset,
            "frozen_layers": frozen,
            "seconds_per_step": med,
            "ratio": whole / fast,
            "all_step_seconds": times,
            "trainable_parameters": n_params,
            "bf16": bf16,
            "threads": torch.get_num_threads(),
            "environment": environment(),
        }
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    main()
