"""Training speed: the seed's per-step procedure against this library's step, side by side.

Both train the semi-supervised model of the same sizes (784-1000-1000, batch 100)
on the same real digits in one process. Rounds alternate between the two so that
the machine's noise hits both alike; the figure is the median of the rounds.
It also reports the step of the ``default`` preset (the recipe ``aae train`` and the job
API use), which may cost more per step than the seed's. With --accuracy-steps both are
also trained that many steps from the same seed and
their test errors are printed, to show that the speed costs no accuracy.

    python -m benchmarks.train_speed --data-dir ../shared/data/mnist
    python -m benchmarks.train_speed --data-dir ../shared/data/mnist --accuracy-steps 2000
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from aae.config import AAEConfig, Mode, Precision
from aae.data import splits_for
from aae.device import tune_cpu_allocator
from aae.presets import DEFAULT_PRESET, build_config
from aae.training import Trainer
from benchmarks.seed_step import SeedTrainer

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mnist"


def steps_per_second(step, batches, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        step(batches[i % len(batches)])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("AAE_DATA_DIR", FIXTURE)))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=40, help="steps per round")
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--precision", default="auto", choices=[p.value for p in Precision])
    parser.add_argument("--accuracy-steps", type=int, default=0)
    parser.add_argument("--stock-allocator", action="store_true",
                        help="leave glibc's malloc thresholds alone (both steps)")
    args = parser.parse_args()
    tuned = False if args.stock_allocator else tune_cpu_allocator()

    cfg = AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=args.labels,
                    precision=Precision(args.precision), validation_size=1000)
    splits = splits_for(cfg, args.data_dir)
    ours = Trainer(cfg, splits, device="cpu")
    seed = SeedTrainer(cfg)
    batches = [b for _, b in zip(range(20), ours._batches(0))]
    default_cfg = build_config(DEFAULT_PRESET, mode=Mode.SEMI_SUPERVISED, n_labels=args.labels,
                               precision=Precision(args.precision), validation_size=1000)
    default = Trainer(default_cfg, splits, device="cpu")

    def our_step(b):
        ours.train_batch(b)

    def default_step(b):  # with the default's moving average of the weights, if any
        default.train_batch(b)

    def seed_step(b):
        seed.step(b.x, b.x_labeled, b.y_labeled)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"precision {ours.precision.value}, batch {cfg.batch_size}, "
          f"allocator {'tuned' if tuned else 'stock'}, data {args.data_dir}")
    for step in (our_step, seed_step, default_step):  # warm-up
        steps_per_second(step, batches, 5)
    seed_rates, our_rates, default_rates = [], [], []
    for _ in range(args.rounds):
        seed_rates.append(steps_per_second(seed_step, batches, args.steps))
        our_rates.append(steps_per_second(our_step, batches, args.steps))
        default_rates.append(steps_per_second(default_step, batches, args.steps))
    s, o = statistics.median(seed_rates), statistics.median(our_rates)
    d = statistics.median(default_rates)

    def rounds(rates: list[float]) -> str:
        return ", ".join(f"{r:.1f}" for r in rates)

    print(f"seed-style step      : {s:6.2f} steps/s  (rounds: {rounds(seed_rates)})")
    print(f"library step (seed)  : {o:6.2f} steps/s  (rounds: {rounds(our_rates)})")
    print(f"library step ({DEFAULT_PRESET}): {d:6.2f} steps/s  (rounds: {rounds(default_rates)})")
    print(f"ratio                : {o / s:.2f}x (seed recipe), {d / s:.2f}x "
          f"(the {DEFAULT_PRESET} preset)")

    if args.accuracy_steps:
        cfg = cfg.replace(max_steps=args.accuracy_steps, epochs=10_000)
        splits = splits_for(cfg, args.data_dir)
        t = time.perf_counter()
        ours = Trainer(cfg, splits, device="cpu")
        result = ours.fit()
        our_time = time.perf_counter() - t
        t = time.perf_counter()
        seed = SeedTrainer(cfg)
        for _, b in zip(range(args.accuracy_steps), _cycle(ours, cfg)):
            seed.step(b.x, b.x_labeled, b.y_labeled)
        seed_time = time.perf_counter() - t
        seed_error = seed.error(splits.test.images, splits.test.labels)
        print(f"after {args.accuracy_steps} steps with {args.labels} labels:")
        print(f"  seed-style test error {seed_error:.2%} in {seed_time:.0f} s")
        print(f"  library    test error {result.metrics['test_error']:.2%} in {our_time:.0f} s")


def _cycle(trainer: Trainer, cfg: AAEConfig):
    epoch = 0
    while True:
        yield from trainer._batches(epoch)
        epoch += 1


if __name__ == "__main__":
    main()
