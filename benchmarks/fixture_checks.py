"""The figures behind the fixture tests of recipe quality, measured under each thread
count and matrix precision before their thresholds are fixed.

- margin: the seed's and the default recipe's validation errors on the committed
  10,000-digit fixture (100 labels, 11 epochs, 1,000 validation digits, seed 1), as
  ``tests/aae/test_quality.py`` trains them;
- fidelity: the share of ``model.sample(label=L)`` images that a judge trained on the
  2,000-digit fixture reads as L, for the supervised and the default semi-supervised
  models trained on that fixture.

    python -m benchmarks.fixture_checks --threads 1 2 --precision fp32 bf16
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from aae.config import Mode
from aae.data import splits_for
from aae.evaluation import sample_fidelity
from aae.model import AdversarialAutoencoder
from aae.presets import build_config
from aae.training import Trainer
from benchmarks.judge import Judge, train

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def margin_errors(data_dir: Path = FIXTURES / "mnist-10k", **overrides) -> dict[str, float]:
    """Each recipe from the same seed (the same 100 labels) on the same steps."""
    errors = {}
    for preset in ("seed", "default"):
        cfg = build_config(preset, mode="semi_supervised", n_labels=100, seed=1, epochs=11,
                           validation_size=1000, **overrides)
        splits = splits_for(cfg, data_dir, download=False)
        errors[preset] = Trainer(cfg, splits).fit().metrics["validation_error"]
    return errors


def fixture_judge(data_dir: Path = FIXTURES / "mnist") -> tuple[Judge, float]:
    """A judge trained on the fixture's 2,000 training digits, and its accuracy on its
    500 test digits."""
    return train(data_dir, epochs=15, seed=0)


def fixture_models(data_dir: Path = FIXTURES / "mnist", **overrides
                   ) -> dict[str, AdversarialAutoencoder]:
    """The default recipe's supervised and semi-supervised (100 labels) models trained on
    the 2,000-digit fixture (300 validation digits)."""
    models = {}
    for mode, extra in ((Mode.SUPERVISED, {"epochs": 20}),
                        (Mode.SEMI_SUPERVISED, {"n_labels": 100, "epochs": 40})):
        cfg = build_config("default", mode=mode.value, validation_size=300, seed=1,
                           **extra, **overrides)
        models[mode.value] = Trainer(cfg, splits_for(cfg, data_dir, download=False)).fit().model
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--skip-margin", action="store_true")
    parser.add_argument("--skip-fidelity", action="store_true")
    args = parser.parse_args()
    judge = None
    if not args.skip_fidelity:
        judge, accuracy = fixture_judge()
        print(f"fixture judge: {accuracy:.1%} of the fixture's 500 test digits\n")
    print("| threads | precision | margin: seed | default | seed - default | "
          "fidelity: supervised | semi-supervised |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for threads, precision in itertools.product(args.threads, args.precision):
        torch.set_num_threads(threads)
        margin = ({"seed": float("nan"), "default": float("nan")} if args.skip_margin
                  else margin_errors(precision=precision))
        fidelity = ({mode: float("nan") for mode in ("supervised", "semi_supervised")}
                    if judge is None else
                    {mode: sample_fidelity(model, judge.predict).mean
                     for mode, model in fixture_models(precision=precision).items()})
        print(f"| {threads} | {precision} | {margin['seed']:.1%} | {margin['default']:.1%} | "
              f"{margin['seed'] - margin['default']:+.1%} | {fidelity['supervised']:.1%} | "
              f"{fidelity['semi_supervised']:.1%} |", flush=True)


if __name__ == "__main__":
    main()
