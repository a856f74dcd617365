"""Sample fidelity: does ``GET /sample?label=L`` draw an L?

For each published version named, draws ``--per-label`` samples of every label through
the service's own sampling code (``AdversarialAutoencoder.sample``: codes from the
prior, the label one-hot, the decoder) and reports the share that the independent judge
(``benchmarks/judge.py``: a CNN trained on all 60,000 MNIST training digits, 99.4% on the
test set) reads as the label asked for, per label and the mean; beside it, the share the
model's own classifier reads as asked (what every version's metrics carry).

    python -m benchmarks.sample_fidelity --store runs/models default-s1 seed-s1
    python -m benchmarks.sample_fidelity --store runs/models default-s1@2 --per-label 500
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aae.checkpoints import load_model
from aae.evaluation import own_classifier, sample_fidelity
from aae.store import CheckpointStore
from benchmarks.judge import load_judge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="NAME or NAME@VERSION of published versions")
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--per-label", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="of the draws")
    args = parser.parse_args()
    judge = load_judge()
    store = CheckpointStore(args.store)
    print("| version | mode | judge: mean | lowest label | own classifier | "
          + " | ".join(str(d) for d in range(10)) + " |")
    print("|---|---|---:|---:|---:|" + "---:|" * 10)
    for spec in args.models:
        name, _, version = spec.partition("@")
        info, model = load_model(store, name, version or None)
        judged = sample_fidelity(model, judge.predict, args.per_label, args.seed)
        own = (f"{sample_fidelity(model, own_classifier(model), args.per_label, args.seed).mean:.1%}"
               if model.cfg.has_categorical else "-")
        low = min(range(len(judged.per_class)), key=judged.per_class.__getitem__)
        print(f"| {info.name}@{info.version} | {model.cfg.mode.value} | {judged.mean:.1%} | "
              f"{low}: {judged.per_class[low]:.0%} | {own} | "
              + " | ".join(f"{s:.0%}" for s in judged.per_class) + " |")


if __name__ == "__main__":
    main()
