"""Subnormal floats in training: steps per second with and without flushing them to zero.

Trains a recipe on real digits for --warmup steps (long enough for the 100 labels to be
memorised, so that the classification phase's gradients die out), counts the subnormal
entries of the optimisers' state, then times rounds of --steps steps with the CPU's
flush-to-zero off and on, alternating, each round from the same saved state (the median
of the rounds). The warm-up runs without flushing, as training did before.
The entry points turn flushing on (``aae.device.flush_denormals``); this is the
measurement behind it. The setting is per thread, so this runs on one torch thread.

    OMP_NUM_THREADS=1 python -m benchmarks.denormals --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import statistics
import time
from pathlib import Path

import torch

from aae.config import Mode
from aae.data import splits_for
from aae.device import tune_cpu_allocator
from aae.phases import train_step
from aae.presets import DEFAULT_PRESET, build_config
from aae.training import Trainer
from benchmarks.quality import parse_sets

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mnist"
SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


def subnormal_share(trainer: Trainer) -> tuple[int, int]:
    """(subnormal entries, all entries) over every optimiser's state tensors."""
    subnormal = total = 0
    for opt in trainer.optimizers.named().values():
        for state in opt.state.values():
            for value in state.values():
                if torch.is_tensor(value) and value.is_floating_point() and value.numel() > 1:
                    a = value.abs()
                    subnormal += int(((a > 0) & (a < SMALLEST_NORMAL)).sum())
                    total += value.numel()
    return subnormal, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("AAE_DATA_DIR", FIXTURE)))
    parser.add_argument("--warmup", type=int, default=1500, help="steps before timing")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50, help="steps per round")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change the default preset, e.g. --set vat_epsilon=2.0")
    args = parser.parse_args()
    tune_cpu_allocator()
    torch.set_num_threads(1)  # flush-to-zero is per thread: toggle it on the only one

    cfg = build_config(DEFAULT_PRESET, mode=Mode.SEMI_SUPERVISED, n_labels=100,
                       **parse_sets(args.set))
    splits = splits_for(cfg, args.data_dir)
    trainer = Trainer(cfg, splits, device="cpu")
    batches = itertools.chain.from_iterable(trainer._batches(e) for e in itertools.count())

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            trainer.losses = train_step(trainer.model, trainer.optimizers, next(batches),
                                        trainer.precision, trainer.prior_rng)
        return n / (time.perf_counter() - start)

    run(args.warmup)
    saved = copy.deepcopy((trainer.model.state_dict(),
                           {k: o.state_dict() for k, o in trainer.optimizers.named().items()}))

    def restore() -> None:
        model, optimizers = copy.deepcopy(saved)
        trainer.model.load_state_dict(model)
        for name, opt in trainer.optimizers.named().items():
            opt.load_state_dict(optimizers[name])

    subnormal, total = subnormal_share(trainer)
    print(f"after {args.warmup} steps without flushing: {subnormal:,} of {total:,} optimiser "
          f"state entries are subnormal ({subnormal / total:.1%})")
    print(f"losses: {', '.join(f'{k}={v:.4f}' for k, v in trainer.losses.items())}")
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for flush in (False, True):
            restore()
            torch.set_flush_denormal(flush)
            rates[flush].append(run(args.steps))
    slow, fast = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"steps/s, median of {args.rounds} rounds of {args.steps}: subnormals kept "
          f"{slow:.1f}, flushed {fast:.1f}: {fast / slow:.2f}x")


if __name__ == "__main__":
    main()
