import math

import pytest
import torch

from aae.config import AAEConfig, PriorKind
from aae.priors import CategoricalPrior, GaussianPrior, MixturePrior, make_prior

N = 200_000


def test_gaussian_prior_has_the_stated_mean_and_spread():
    g = torch.Generator().manual_seed(0)
    z = GaussianPrior(dim=3, std=5.0).sample(N, g)
    assert z.shape == (N, 3)
    assert z.mean(0).abs().max() < 0.05  # standard error 5/sqrt(N) ~ 0.011
    assert torch.allclose(z.std(0), torch.full((3,), 5.0), atol=0.05)
    cov = torch.cov(z.T)
    assert (cov - torch.diag(torch.diag(cov))).abs().max() < 0.3  # independent coordinates


def test_mixture_prior_components_sit_on_a_circle_with_the_stated_spread():
    k, radius, std = 10, 5.0, 0.5
    prior = MixturePrior(dim=2, k=k, radius=radius, component_std=std)
    assert torch.allclose(prior.means.norm(dim=1), torch.full((k,), radius))
    g = torch.Generator().manual_seed(1)
    for component in (0, 3, 7):
        z = prior.sample(20_000, g, components=torch.full((20_000,), component))
        angle = 2 * math.pi * component / k
        expected = torch.tensor([radius * math.cos(angle), radius * math.sin(angle)])
        assert torch.allclose(z.mean(0), expected, atol=0.03)
        assert torch.allclose(z.std(0), torch.full((2,), std), atol=0.02)
    z = prior.sample(N, g)
    assert z.mean(0).abs().max() < 0.05  # the components balance around the origin
    nearest = torch.cdist(z, prior.means).argmin(1)
    freq = torch.bincount(nearest, minlength=k).float() / N
    assert torch.allclose(freq, torch.full((k,), 1 / k), atol=0.01)  # equal weights


def test_categorical_prior_is_uniform_one_hot():
    y = CategoricalPrior(10).sample(N, torch.Generator().manual_seed(2))
    assert set(y.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(y.sum(1), torch.ones(N))
    assert torch.allclose(y.mean(0), torch.full((10,), 0.1), atol=0.005)


@pytest.mark.parametrize("kind, cls", [(PriorKind.GAUSSIAN, GaussianPrior),
                                       (PriorKind.MIXTURE, MixturePrior)])
def test_make_prior_follows_the_config(kind, cls):
    prior = make_prior(AAEConfig(prior=kind, z_dim=4))
    assert isinstance(prior, cls)
    assert prior.sample(5).shape == (5, 4)
