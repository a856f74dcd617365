"""The default recipe beats the seed's on real digits, on the same steps.

What the default adds to the seed's recipe (virtual adversarial training, the marginal
entropy of q(y), input noise and a 10-D code) feeds on unlabeled digits. On the
2,000-digit fixture (``tests/fixtures/mnist``, 1,700 training digits) the two recipes are
within its noise (docs/quality.md, seventh and eighth rounds: seeds 1-3 at 10 and 40
epochs, validation errors that disagree in sign), so the fixture test runs on the
committed 10,000-digit subset (``tests/fixtures/mnist-10k``), where the margin shows on
every label draw screened (seeds 1-5, 990 steps, validation error seed's - default's:
6.0, 15.2, 7.3, 8.0, 6.5 points with today's default, tenth round; 5.1, 3.9, 5.6, 4.0,
2.0 before the shifts of the labeled digits joined it, ninth round). On seed 1 the margin
depends on the thread count and the matrix precision: 2.4 to 7.0 points on this
project's machine kind (eleventh round), so the test asks for 1. The slow test
repeats the comparison on full MNIST (``../shared/data/mnist``, or ``AAE_DATA_DIR``): after 2 epochs
(seed 1, one thread) the seed's recipe is at 12.74% validation error and the default at
4.84% (7.22% before the shifts of the labeled digits).
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


def validation_errors(data_dir: Path, **overrides) -> dict[str, float]:
    """Each recipe trained from the same seed (the same 100 labels) on the same steps."""
    errors = {}
    for preset in ("seed", "default"):
        cfg = build_config(preset, mode="semi_supervised", n_labels=100, seed=1, **overrides)
        splits = splits_for(cfg, data_dir, download=False)
        errors[preset] = Trainer(cfg, splits).fit().metrics["validation_error"]
    return errors


def test_the_default_recipe_beats_the_seeds_on_the_10k_fixture(fixture_10k_data_dir):
    # 11 epochs of 90 steps. Measured on this project's machine kind under each thread
    # count and matrix precision (python -m benchmarks.fixture_checks, docs/quality.md,
    # "The fixture margin under threads and precisions"), seed's - default's validation
    # error: 2 threads bf16 12.5% - 10.1% = 2.4 points, 1 thread bf16 3.6, 1 thread fp32
    # 7.0, 2 threads fp32 5.3; the margin asked is 1 point, under the smallest
    errors = validation_errors(fixture_10k_data_dir, epochs=11, validation_size=1000)
    assert errors["default"] <= errors["seed"] - 0.01, errors


@pytest.mark.slow
def test_the_default_recipe_beats_the_seeds_on_validation_after_1000_steps():
    errors = validation_errors(mnist_dir(), epochs=2)
    # measured with one thread: 12.74% (seed) and 4.84% (default); the margin asked is 2 points
    assert errors["default"] < errors["seed"] - 0.02, errors
