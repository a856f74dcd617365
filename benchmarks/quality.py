"""Train one recipe on full MNIST and log its validation curve; test error once, at the end.

Each run writes ``docs/runs/<name>-seed<seed>.log``: the config, then one line per epoch
(training time without evaluation, validation error and reconstruction loss, the
phases' losses), then the test error of the finished run. The test set is evaluated
once per run and never used to choose anything.

    python benchmarks/quality.py --data-dir ../shared/data/mnist --preset default \\
        --labels 100 --seeds 1 2 3 --name default
    python benchmarks/quality.py --preset seed --labels 100 --set epochs=20 --name seed-20ep
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aae.data import default_data_dir, load_splits  # noqa: E402
from aae.device import tune_cpu_allocator  # noqa: E402
from aae.evaluation import evaluate  # noqa: E402
from aae.presets import build_config, preset_names  # noqa: E402
from aae.training import Progress, Trainer  # noqa: E402

RUNS = Path(__file__).resolve().parents[1] / "docs" / "runs"


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def run(data_dir: Path, preset: str, labels: int, seed: int, sets: dict, name: str) -> dict:
    cfg = build_config(preset, **{"mode": "semi_supervised", "n_labels": labels, "seed": seed,
                                  **sets})
    splits = load_splits(data_dir, n_labels=cfg.n_labels, validation_size=cfg.validation_size,
                         seed=cfg.seed)
    RUNS.mkdir(parents=True, exist_ok=True)
    log_path = RUNS / f"{name}-seed{seed}.log"
    log = open(log_path, "w", encoding="utf-8")

    def write(line: str) -> None:
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    write(f"# {name} seed {seed}: python benchmarks/quality.py --preset {preset} "
          f"--labels {labels} --seeds {seed} --name {name} "
          + " ".join(f"--set {k}={v!r}" for k, v in sets.items()))
    write("# config " + json.dumps(cfg.to_dict()))
    write("# epoch step train_s validation_error validation_loss losses")

    def on_progress(p: Progress) -> None:
        if p.event == "epoch":
            losses = " ".join(f"{k}={v:.4f}" for k, v in p.losses.items())
            write(f"{p.epoch} {p.step} {p.elapsed_s:.1f} {p.validation_error:.4f} "
                  f"{p.validation_loss:.4f} {losses}")

    trainer = Trainer(cfg, splits, on_progress=on_progress, progress_every=10**9)
    result = trainer.fit()
    test = evaluate(result.model, splits.test)
    best = min(trainer.history, key=lambda h: h["validation_error"])
    m = result.metrics
    write(f"# finished: {m['steps']} steps, {m['train_seconds']:.0f} s training "
          f"(validation included), final validation error {m['validation_error']:.4f}, "
          f"best validation error {best['validation_error']:.4f} at epoch {best['epoch']}, "
          f"test error {test.error:.4f}")
    log.close()
    return {"seed": seed, "test_error": test.error, "validation_error": m["validation_error"],
            "train_seconds": m["train_seconds"], "log": str(log_path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("AAE_DATA_DIR", default_data_dir())))
    parser.add_argument("--preset", default="default", choices=preset_names())
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="a config field, e.g. --set vat_weight=0 (repeatable)")
    parser.add_argument("--name", required=True, help="run name (log file prefix)")
    args = parser.parse_args()
    tune_cpu_allocator()
    sets = parse_sets(args.sets)
    rows = [run(args.data_dir, args.preset, args.labels, seed, sets, args.name)
            for seed in args.seeds]
    errors = [r["test_error"] for r in rows]
    spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
    print(f"\n{args.name}: test error {statistics.mean(errors):.2%} ± {spread:.2%} over seeds "
          f"{args.seeds}; training {statistics.mean(r['train_seconds'] for r in rows):.0f} s "
          "per run")


if __name__ == "__main__":
    main()
