"""Anomaly scores: the prior densities, the score's parts, the calibrated threshold."""

import math

import torch
from torch.distributions import Normal

from aae import anomaly
from aae.config import AAEConfig, Mode
from aae.data import Digits
from aae.model import AdversarialAutoencoder
from aae.priors import GaussianPrior, MixturePrior


def test_prior_log_densities():
    z = torch.randn(50, 2) * 3
    assert torch.allclose(GaussianPrior(2, 5.0).log_prob(z), Normal(0, 5.0).log_prob(z).sum(1))
    mixture = MixturePrior(2, 4, 5.0, 1.0)
    by_hand = torch.stack([Normal(m, 1.0).log_prob(z).sum(1) for m in mixture.means], 1)
    assert torch.allclose(mixture.log_prob(z), torch.logsumexp(by_hand, 1) - math.log(4),
                          atol=1e-5)


def test_scores_add_reconstruction_and_prior_per_pixel():
    torch.manual_seed(0)
    for mode in Mode:
        model = AdversarialAutoencoder(AAEConfig(mode=mode, hidden=16)).eval()
        x = torch.rand(6, 784)
        s = anomaly.score(model, x)
        assert torch.allclose(s.score, s.reconstruction + s.prior_nll / 784)
        assert (s.reconstruction > 0).all() and s.score.shape == (6,)


def test_the_threshold_is_the_percentile_of_the_digits_scores():
    torch.manual_seed(0)
    model = AdversarialAutoencoder(AAEConfig(mode=Mode.UNSUPERVISED, hidden=16)).eval()
    digits = Digits(torch.rand(200, 784), torch.zeros(200, dtype=torch.long))
    calibration = anomaly.calibrate(model, digits, percentile=90, batch_size=64)
    scores = anomaly.score(model, digits.images).score
    assert calibration["n"] == 200 and calibration["percentile"] == 90
    assert math.isclose(calibration["threshold"], torch.quantile(scores, 0.9).item(),
                        rel_tol=1e-5)
    assert anomaly.calibrate(model, Digits(torch.zeros(0, 784), torch.zeros(0))) is None
