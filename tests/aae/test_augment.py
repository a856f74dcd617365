"""Training digits changed as handwriting differs (``aae.augment``), on real digits."""

from __future__ import annotations

import pytest
import torch
from scipy import ndimage

from aae.augment import Augmentation, augmentation, augmented
from aae.config import AAEConfig, Mode
from aae.data import load_digits, splits_for
from aae.training import Trainer


@pytest.fixture(scope="module")
def x(fixture_data_dir) -> torch.Tensor:
    return load_digits(fixture_data_dir, download=False)[1].images[:200]


def test_nothing_asked_changes_nothing(x):
    assert augmented(x, Augmentation()) is x
    assert augmentation(AAEConfig()) == Augmentation()


@pytest.mark.parametrize("aug", [Augmentation(rotation=15), Augmentation(scale=0.2),
                                 Augmentation(shear=0.3), Augmentation(translation=2),
                                 Augmentation(stroke=1.0), Augmentation(elastic=2.0),
                                 Augmentation(resolution=8)])
def test_each_change_keeps_digits_digits_and_differs_per_digit(x, aug):
    torch.manual_seed(0)
    y = augmented(x, aug)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    change = (y - x).abs().mean(1)
    assert change.mean() > 0.01 and change.std() > 0.002  # each its own draw
    assert (y.sum(1) / x.sum(1)).median() == pytest.approx(1.0, abs=0.25)  # ink kept


def test_strokes_get_bolder_by_whole_steps_and_thinner_by_half_of_one(x):
    torch.manual_seed(0)
    ratio = augmented(x, Augmentation(stroke=2.0)).sum(1) / x.sum(1)
    assert ratio.max() > 2.5 and ratio.min() < 0.8 and ratio.min() > 0.4


def test_lower_resolution_blurs_half_the_digits(x):
    torch.manual_seed(0)
    changed = (augmented(x, Augmentation(resolution=8)) - x).abs().amax(1) > 1e-6
    assert 0.3 < changed.float().mean() < 0.7


def test_translation_moves_the_centre_of_mass_by_at_most_its_limit(x):
    torch.manual_seed(0)
    y = augmented(x, Augmentation(translation=3))
    before = torch.tensor([ndimage.center_of_mass(d.reshape(28, 28).numpy()) for d in x])
    after = torch.tensor([ndimage.center_of_mass(d.reshape(28, 28).numpy()) for d in y])
    moved = (after - before).abs()
    assert moved.max() <= 3.5 and moved.mean() > 0.8


@pytest.mark.parametrize("unlabeled", [False, True])
def test_training_with_augmented_digits_learns(fixture_data_dir, unlabeled):
    cfg = AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=200, epochs=4, validation_size=300,
                    hidden=256, augment_rotation=10, augment_stroke=0.5,
                    augment_unlabeled=unlabeled)
    result = Trainer(cfg, splits_for(cfg, fixture_data_dir)).fit()
    assert result.metrics["test_error"] < 0.45  # chance is 0.90
