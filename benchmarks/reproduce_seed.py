"""Reproduce the seed post's semi-supervised result on full MNIST.

Trains the semi-supervised AAE with the seed's recipe (784-1000-1000 networks,
z of 2 dimensions, prior std 5, learning rates 6e-4/8e-4/1e-3, batch 100) for
each number of labels, and prints the error on the 10,000 test digits against
steps and training time (evaluation time excluded).

    python -m benchmarks.reproduce_seed --data-dir ../shared/data/mnist
    python -m benchmarks.reproduce_seed --data-dir ../shared/data/mnist --labels 100 --steps 2000
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from aae.config import AAEConfig, Mode, Precision
from aae.data import default_data_dir, load_splits
from aae.device import tune_cpu_allocator
from aae.evaluation import evaluate
from aae.training import Progress, Trainer


def run(data_dir: Path, labels: int, steps: int, every: int, precision: str) -> list[tuple]:
    cfg = AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=labels, max_steps=steps, epochs=10_000,
                    precision=Precision(precision))
    splits = load_splits(data_dir, n_labels=labels, validation_size=cfg.validation_size,
                         seed=cfg.seed)
    rows: list[tuple] = []
    eval_time = 0.0
    start = time.perf_counter()

    def on_progress(p: Progress) -> None:
        nonlocal eval_time
        if p.event != "step" or (p.step % every and p.step != p.total_steps):
            return
        t = time.perf_counter()
        error = evaluate(trainer.evaluated, splits.test).error
        eval_time += time.perf_counter() - t
        train_s = time.perf_counter() - start - eval_time
        rows.append((labels, p.step, train_s, error))
        print(f"{labels:>6} labels  step {p.step:>6}  {train_s:7.1f} s  test error {error:6.2%}",
              flush=True)

    trainer = Trainer(cfg, splits, on_progress=on_progress, progress_every=every)
    trainer.fit()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("AAE_DATA_DIR", default_data_dir())))
    parser.add_argument("--labels", type=int, nargs="+", default=[3000, 100])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--precision", default="auto", choices=[p.value for p in Precision])
    args = parser.parse_args()
    tune_cpu_allocator()
    rows = [row for labels in args.labels
            for row in run(args.data_dir, labels, args.steps, args.every, args.precision)]
    print("\n| labels | steps | training time | test error |\n|---:|---:|---:|---:|")
    for labels, step, seconds, error in rows:
        print(f"| {labels} | {step} | {seconds:.0f} s | {error:.2%} |")


if __name__ == "__main__":
    main()
