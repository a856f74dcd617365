"""Which classes a semi-supervised run confuses: its confusion matrix on the validation split.

Trains a preset (100 labels by default, the labels and data order drawn by --seed) for
--steps steps on full MNIST, then prints the validation error, the 10x10 matrix (rows:
true class, columns: predicted) and the pairs confused most. Made to look at runs that
stick at 13-20% (docs/quality.md, "The same recipe on another machine").

    OMP_NUM_THREADS=1 python -m benchmarks.confusion --data-dir ../shared/data/mnist --steps 1500
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from aae.data import default_data_dir, splits_for
from aae.device import flush_denormals, tune_cpu_allocator
from aae.presets import build_config, preset_names
from aae.training import Trainer
from benchmarks.quality import parse_sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("AAE_DATA_DIR", default_data_dir())))
    parser.add_argument("--preset", default="default", choices=preset_names())
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="a config field, e.g. --set vat_weight=0 (repeatable)")
    args = parser.parse_args()
    tune_cpu_allocator()
    flush_denormals()
    cfg = build_config(args.preset, mode="semi_supervised", n_labels=args.labels,
                       seed=args.seed, max_steps=args.steps, **parse_sets(args.sets))
    splits = splits_for(cfg, args.data_dir, download=False)
    result = Trainer(cfg, splits).fit()
    with torch.no_grad():
        _, logits = result.model.encoder(splits.validation.images)
    truth, predicted = splits.validation.labels, logits.argmax(1)
    matrix = torch.zeros(cfg.n_classes, cfg.n_classes, dtype=torch.long)
    matrix.index_put_((truth, predicted), torch.ones_like(truth), accumulate=True)
    print(f"validation error after {args.steps} steps: "
          f"{result.metrics['validation_error']:.2%}")
    print("rows: true class, columns: predicted")
    print(matrix)
    errors = matrix.clone().fill_diagonal_(0)
    pairs = sorted(((int(errors[i, j]), i, j) for i in range(cfg.n_classes)
                    for j in range(cfg.n_classes) if i != j), reverse=True)[:5]
    print(f"most confused ({int(errors.sum())} errors): "
          + ", ".join(f"{i} called {j}: {n}" for n, i, j in pairs))


if __name__ == "__main__":
    main()
