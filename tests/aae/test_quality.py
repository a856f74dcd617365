"""The default recipe beats the seed's on real MNIST (slow: full MNIST, 1,000 steps each).

On the committed fixture (1,700 training digits) the two are within its noise (measured:
27.6% against 27.4% test error after 10 epochs, 28.0% against 25.6% after 20, validation
errors the other way round), so the comparison runs on the canonical MNIST beside the
checkout (``../shared/data/mnist``, or ``AAE_DATA_DIR``), where the unlabeled digits that
virtual adversarial training feeds on are numerous: after 2 epochs (seed 1, one thread,
this project's AMX machine) the seed's recipe is at 12.74% validation error and the
default at 7.22% (the fifth round's default, with a 2-D code: 9.03%). The fixture
measured again with today's default (docs/quality.md, "Seventh round"): seeds 1-3, 10
epochs, 20.2%, 23.6%, 21.0% test error against the seed's 20.2%, 23.6%, 22.2%, and
validation errors that disagree in sign: still noise.
"""

import os
from pathlib import Path

import pytest

from aae.data import splits_for
from aae.presets import build_config
from aae.training import Trainer

ROOT = Path(__file__).resolve().parents[2]


def mnist_dir() -> Path:
    for candidate in (os.environ.get("AAE_DATA_DIR"), ROOT.parent / "shared" / "data" / "mnist"):
        if candidate and (Path(candidate) / "train-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    raise AssertionError("full MNIST is needed: set AAE_DATA_DIR or put ../shared beside "
                         "the checkout")


@pytest.mark.slow
def test_the_default_recipe_beats_the_seeds_on_validation_after_1000_steps():
    errors = {}
    for preset in ("seed", "default"):
        cfg = build_config(preset, mode="semi_supervised", n_labels=100, seed=1, epochs=2)
        splits = splits_for(cfg, mnist_dir(), download=False)
        errors[preset] = Trainer(cfg, splits).fit().metrics["validation_error"]
    # measured with one thread: 12.74% (seed) and 7.22% (default); the margin asked is 2 points
    assert errors["default"] < errors["seed"] - 0.02, errors
