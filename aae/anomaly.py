"""How unlike the training digits an image is: an anomaly score and its threshold.

An autoencoder trained on digits reconstructs digits well and other things badly, and an
adversarial autoencoder also puts the codes of digits where its prior has mass. The score
of an image adds both, in nats per pixel:

    score = reconstruction cross-entropy per pixel + (-log p(z)) / 784

The threshold is calibrated when a version is published: the ``percentile`` (99th) of
the scores of the validation digits, kept in the version's metrics as ``anomaly``; an
image scoring above it is an outlier. Models with a class input score with the class
that reconstructs the image best (a supervised model is not told the class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from aae import inputs
from aae.config import Mode
from aae.data import Digits
from aae.model import AdversarialAutoencoder, require_finite

PERCENTILE = 99.0


@dataclass(frozen=True)
class Scores:
    reconstruction: torch.Tensor  # mean per-pixel binary cross-entropy of P(Q(x)) and x
    prior_nll: torch.Tensor  # -log p(z) of the code
    score: torch.Tensor  # their sum, the prior term per pixel


def reconstruction_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel binary cross-entropy of each row."""
    return F.binary_cross_entropy(x_hat.clamp(1e-6, 1 - 1e-6), x, reduction="none").mean(1)


def combine(model: AdversarialAutoencoder, x: torch.Tensor, x_hat: torch.Tensor,
            z: torch.Tensor) -> Scores:
    """The scores of images ``x``, given their reconstructions and codes."""
    require_finite("the model", "score", x_hat, z)
    rec = reconstruction_error(x, x_hat)
    nll = -model.prior.log_prob(z)
    require_finite("the model", "score", rec, nll)  # a code far out in the prior's tail
    return Scores(rec, nll, rec + nll / model.cfg.x_dim)


@torch.no_grad()
def score(model: AdversarialAutoencoder, x: torch.Tensor) -> Scores:
    """The scores of a batch of images (float32 pixels in [0, 1])."""
    x = inputs.images(x, model.cfg.x_dim).to(model.device)
    code = model.encode(x)
    require_finite("the model", "score", code.z)
    if model.cfg.mode is not Mode.SUPERVISED:
        return combine(model, x, model.decode(code.z, y=code.y), code.z)
    errors = []
    for label in range(model.cfg.n_classes):
        x_hat = model.decode(code.z, labels=label)
        require_finite("the model", "score", x_hat)
        errors.append(reconstruction_error(x, x_hat))
    errors = torch.stack(errors, dim=1)
    best = errors.argmin(1)
    return combine(model, x, model.decode(code.z, labels=best), code.z)


def calibrate(model: AdversarialAutoencoder, digits: Digits, percentile: float = PERCENTILE,
              batch_size: int = 1000) -> dict[str, float] | None:
    """The threshold: the ``percentile`` of the scores of ``digits`` (the validation
    split), as kept in a version's metrics; None without digits."""
    if len(digits) == 0:
        return None
    was_training = model.training
    model.eval()
    try:
        scores = torch.cat([score(model, digits.images[i:i + batch_size]).score.cpu()
                            for i in range(0, len(digits), batch_size)])
    finally:
        model.train(was_training)
    return {"threshold": torch.quantile(scores, percentile / 100).item(),
            "percentile": percentile, "n": len(digits)}
