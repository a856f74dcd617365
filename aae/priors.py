"""Priors p(z) and p(y) that the adversarial networks impose on the codes."""

from __future__ import annotations

import math

import torch

from aae.config import AAEConfig, PriorKind


def _gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """log N(z; mean, std² I), summed over the last dimension."""
    d = z.shape[-1]
    return (-0.5 * ((z - mean) / std).pow(2).sum(-1)
            - d * math.log(std) - 0.5 * d * math.log(2 * math.pi))


class GaussianPrior:
    """N(0, std^2 I) in ``dim`` dimensions."""

    def __init__(self, dim: int, std: float) -> None:
        self.dim, self.std = dim, std

    def sample(self, n: int, generator: torch.Generator | None = None,
               components: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` draws; ``components`` is accepted for symmetry and ignored."""
        return torch.randn(n, self.dim, generator=generator) * self.std

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) of each row."""
        return _gaussian_log_prob(z, torch.zeros_like(z), self.std)


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

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) of each row: the log of the components' mean density."""
        means = self.means.to(z.device)
        per_component = _gaussian_log_prob(z.unsqueeze(1), means.unsqueeze(0),
                                           self.component_std)
        return torch.logsumexp(per_component, dim=1) - math.log(self.k)


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
