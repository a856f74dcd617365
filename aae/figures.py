"""The pictures of the seed post and the paper, as images a model decodes.

- ``manifold``: the decoder walked over a grid of the 2-D latent space (the seed's
  -10..10 for a prior of std 5: two standard deviations each way);
- ``style_grid``: each row one style code z, each column one class: what a supervised or
  semi-supervised model separates (the paper's disentanglement figure);
- ``interpolation_codes``: the way between two codes (or two images' codes), linearly
  or along the great circle;
- ``latent_sample``: codes of labeled digits, kept with a version for its scatter plot.

The ``*_codes`` functions return the codes (z and the decoder's class input) of a
picture's images in reading order, so that the service decodes them in its batched
forward passes; ``render`` decodes them directly (the command line). Randomness comes
from a ``torch.Generator``: a seed gives the same picture every time.
"""

from __future__ import annotations

import math

import torch

from aae import inputs
from aae.config import Mode
from aae.data import Digits
from aae.errors import CapabilityError, InvalidInput
from aae.model import AdversarialAutoencoder


def _classes(model: AdversarialAutoencoder, label: int | None, n: int) -> torch.Tensor | None:
    """The decoder's class input: the label's one-hot rows, or, left open, the uniform
    mixture of classes (a model with y decodes probabilities as well as one-hots)."""
    cfg = model.cfg
    if not cfg.uses_labels:
        return model.decoder_classes(label, n)
    if label is None:
        return torch.full((n, cfg.n_classes), 1.0 / cfg.n_classes, device=model.device)
    return model.decoder_classes(label, n)


Codes = tuple[torch.Tensor, torch.Tensor | None]  # z, and the decoder's class input


def manifold_codes(model: AdversarialAutoencoder, n: int = 20, extent: float | None = None,
                   label: int | None = None) -> Codes:
    """An n x n grid of codes over [-extent, extent]² (default: two prior standard
    deviations), z[0] left to right and z[1] bottom to top, for models with a 2-D z."""
    cfg = model.cfg
    if cfg.z_dim != 2:
        raise CapabilityError(f"the manifold is drawn for models with a 2-D code; this one "
                              f"has {cfg.z_dim} dimensions (see the latent scatter instead)")
    if extent is None:
        extent = 2.0 * cfg.prior_std
    if not (math.isfinite(extent) and extent > 0):
        raise InvalidInput("extent must be a positive number")
    axis = torch.linspace(-extent, extent, n)
    z = torch.stack([axis.repeat(n), axis.flip(0).repeat_interleave(n)], dim=1)
    return z, _classes(model, label, n * n)


def style_codes(model: AdversarialAutoencoder, rows: int = 10,
                generator: torch.Generator | None = None,
                z: torch.Tensor | None = None) -> Codes:
    """rows x n_classes codes: row i keeps style code z_i (drawn from the prior, or the
    given codes), column j gives it class j."""
    cfg = model.cfg
    if not cfg.uses_labels:
        raise CapabilityError("an unsupervised model has no class input to vary; the style "
                              "grid needs a supervised, semi-supervised or clustering model")
    if z is None:
        components = None
        if cfg.mode is Mode.SUPERVISED:  # a mixture prior: one draw per class's component
            components = torch.arange(rows) % cfg.n_classes
        z = model.prior.sample(rows, generator, components)
    z = inputs.codes(z, cfg.z_dim)
    rows = z.shape[0]
    labels = torch.arange(cfg.n_classes).repeat(rows)
    return z.repeat_interleave(cfg.n_classes, dim=0), model.decoder_classes(labels, len(labels))


@torch.no_grad()
def render(model: AdversarialAutoencoder, codes: Codes) -> torch.Tensor:
    """The images of codes made by the functions above."""
    z, y = codes
    return model.decode(z, y=y).cpu()


def path(a: torch.Tensor, b: torch.Tensor, steps: int, spherical: bool) -> torch.Tensor:
    """``steps`` codes from a to b inclusive: straight, or along the great circle (slerp),
    which keeps a Gaussian code's norm where the prior puts its mass."""
    if steps < 2:
        raise InvalidInput("an interpolation needs at least 2 steps")
    t = torch.linspace(0, 1, steps).unsqueeze(1)
    if spherical:
        cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
        omega = torch.arccos(cos.clamp(-1, 1))
        if torch.sin(omega) > 1e-4:  # not (anti)parallel: the great circle is defined
            return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return (1 - t) * a + t * b


def interpolation_codes(model: AdversarialAutoencoder, a: torch.Tensor, b: torch.Tensor,
                        steps: int = 10, spherical: bool = False,
                        label: int | None = None) -> Codes:
    """The codes from z_a to z_b; the class input is the label's, or left open (the
    uniform mixture of classes)."""
    z_dim = model.cfg.z_dim
    a, b = (inputs.codes(v, z_dim)[0] for v in (a, b))
    steps_z = path(a, b, steps, spherical)
    return steps_z, _classes(model, label, steps)


@torch.no_grad()
def image_interpolation_codes(model: AdversarialAutoencoder, x: torch.Tensor,
                              steps: int = 10, spherical: bool = False,
                              label: int | None = None) -> Codes:
    """The codes between two images': z along the path, and for models with y (unless a
    label fixes it) the class probabilities blended from the first image's to the
    second's."""
    x = inputs.images(x, model.cfg.x_dim)
    if x.shape[0] != 2:
        raise InvalidInput(f"an interpolation takes 2 images, got {x.shape[0]}")
    code = model.encode(x)
    z = path(code.z[0].cpu(), code.z[1].cpu(), steps, spherical)
    if code.y is None or label is not None:
        return z, _classes(model, label, steps)
    t = torch.linspace(0, 1, steps, device=model.device).unsqueeze(1)
    return z, (1 - t) * code.y[0] + t * code.y[1]


@torch.no_grad()
def latent_sample(model: AdversarialAutoencoder, digits: Digits, n: int = 1000
                  ) -> dict[str, list]:
    """The codes z of the first ``n`` digits with their true labels (JSON-ready, 4
    decimals), for a version's latent scatter plot."""
    x, labels = digits.images[:n], digits.labels[:n]
    if len(x) == 0:
        return {"z": [], "labels": []}
    z = model.encode(x.to(model.device)).z.cpu()
    return {"z": [[round(v, 4) for v in row] for row in z.tolist()],
            "labels": labels.tolist()}
