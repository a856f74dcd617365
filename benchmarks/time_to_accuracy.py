"""Time to accuracy: the default recipe and the seed's, one after the other, 100 labels.

Each recipe trains on full MNIST (``--preset`` values, semi_supervised, the labels drawn
by ``--seed``) for at most ``--budget-s`` seconds of training; at every epoch's end the
*test* error is measured as a report (this benchmark alone looks at the test set during
training, and nothing is chosen from it) and the wall-clock training time (evaluation
excluded) at which each recipe first reaches 10%, 5%, 3% and 2% test error is printed,
"never" if not within its budget. Run it on an otherwise idle machine: the times are the
figure. Each run's per-epoch log goes to ``docs/runs/time-to-accuracy-<preset>.log``.

    python -m benchmarks.time_to_accuracy --data-dir ../shared/data/mnist
    python -m benchmarks.time_to_accuracy --presets default seed --budget-s 600
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from aae.data import default_data_dir, splits_for
from aae.device import flush_denormals, tune_cpu_allocator
from aae.errors import TrainingStopped
from aae.evaluation import evaluate
from aae.presets import build_config, preset_names
from aae.training import Trainer

THRESHOLDS = (0.10, 0.05, 0.03, 0.02)
RUNS = Path(__file__).resolve().parents[1] / "docs" / "runs"


def run(data_dir: Path, preset: str, labels: int, seed: int, budget_s: float,
        epochs: int, validation_size: int) -> dict[float, float | None]:
    cfg = build_config(preset, mode="semi_supervised", n_labels=labels, seed=seed,
                       epochs=epochs, validation_size=validation_size)
    splits = splits_for(cfg, data_dir)
    reached: dict[float, float | None] = dict.fromkeys(THRESHOLDS)
    RUNS.mkdir(parents=True, exist_ok=True)
    log = open(RUNS / f"time-to-accuracy-{preset}.log", "w", encoding="utf-8")
    log.write(f"# python -m benchmarks.time_to_accuracy --presets {preset} --labels {labels} "
              f"--seed {seed} --budget-s {budget_s:g}\n# epoch train_s test_error\n")
    eval_s = 0.0
    start = time.perf_counter()

    def training_time() -> float:
        return time.perf_counter() - start - eval_s

    def on_epoch_end(trainer: Trainer) -> None:
        nonlocal eval_s
        t = time.perf_counter()
        error = evaluate(trainer.evaluated, splits.test).error
        eval_s += time.perf_counter() - t
        now = training_time()
        for threshold in THRESHOLDS:
            if reached[threshold] is None and error <= threshold:
                reached[threshold] = now
        log.write(f"{trainer.epoch} {now:.1f} {error:.4f}\n")
        log.flush()
        print(f"{preset:8} epoch {trainer.epoch:4}  {now:7.1f} s  test error {error:6.2%}",
              flush=True)

    # validation time counts as training time: the trainer validates every epoch
    trainer = Trainer(cfg, splits, on_epoch_end=on_epoch_end,
                      should_stop=lambda: training_time() > budget_s,
                      progress_every=10**9)
    try:
        trainer.fit()
    except TrainingStopped:
        pass
    log.close()
    return reached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("AAE_DATA_DIR", default_data_dir())))
    parser.add_argument("--presets", nargs="+", default=["default", "seed"],
                        choices=preset_names())
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget-s", type=float, default=600.0,
                        help="training seconds per recipe")
    parser.add_argument("--validation-size", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=10_000,
                        help="epochs cap (the budget normally ends the run first)")
    args = parser.parse_args()
    tune_cpu_allocator()
    flush_denormals()
    results = {p: run(args.data_dir, p, args.labels, args.seed, args.budget_s, args.epochs,
                      args.validation_size) for p in args.presets}
    header = " | ".join(f"{t:.0%}" for t in THRESHOLDS)
    print(f"\n| recipe | {header} |\n|---|" + "---:|" * len(THRESHOLDS))
    for preset, reached in results.items():
        cells = " | ".join("never" if s is None else f"{s:.0f} s" for s in reached.values())
        print(f"| {preset} | {cells} |")


if __name__ == "__main__":
    main()
