"""Priors p(z) and p(y) that the adversarial networks impose on the codes."""

from __future__ import annotations

import math

import torch

from aae.config import AAEConfig, PriorKind


class GaussianPrior:
    """N(0, std^2 I) in ``dim`` dimensions."""

    def __init__(self, dim: int, std: float) -> None:
        self.dim, self.std = dim, std

    def sample(self, n: int, generator: torch.Generator | None = None,
               components: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` draws; ``components`` is accepted for symmetry and ignored."""
        return torch.randn(n, self.dim, generator=generator) * self.std


class MixturePrior:
    """An equal-weight mixture of K isotropic Gaussians whose means lie evenly on a
    circle of radius ``radius`` in the first two dimensions (Makhzani et al., Fig. 4).
    With ``components`` given, draw from those components (e.g. one per class)."""

    def __init__(self, dim: int, k: int, radius: float, component_std: float) -> None:
        self.dim, self.k, self.component_std = dim, k, component_std
        angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
        means = torch.zeros(k, dim, dtype=torch.float64)
        means[:, 0] = radius * torch.cos(angles)
        if dim > 1:
            means[:, 1] = radius * torch.sin(angles)
        self.means = means.float()

    def sample(self, n: int, generator: torch.Generator | None = None,
               components: torch.Tensor | None = None) -> torch.Tensor:
        if components is None:
            components = torch.randint(self.k, (n,), generator=generator)
        noise = torch.randn(n, self.dim, generator=generator) * self.component_std
        return self.means[components % self.k] + noise


class CategoricalPrior:
    """Uniform one-hot vectors over ``k`` classes: the prior on y."""

    def __init__(self, k: int) -> None:
        self.k = k

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        classes = torch.randint(self.k, (n,), generator=generator)
        return torch.nn.functional.one_hot(classes, self.k).float()


Prior = GaussianPrior | MixturePrior


def make_prior(cfg: AAEConfig) -> Prior:
    if cfg.prior is PriorKind.MIXTURE:
        return MixturePrior(cfg.z_dim, cfg.mixture_components, cfg.prior_std,
                            cfg.mixture_component_std)
    return GaussianPrior(cfg.z_dim, cfg.prior_std)
