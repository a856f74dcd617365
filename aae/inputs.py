"""The rules for what a model accepts, written once: images, codes and labels.

Each function takes what a caller has (a tensor, nested lists, an int) and returns a
float32 or int64 tensor whose first dimension is the batch, or raises ``InvalidInput``
with a message fit to show a user. "No label" is ``None`` throughout. The model's
methods and the service's routes (before they queue a request for a batched forward
pass) both call these.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from aae.errors import InvalidInput

Labels = int | Sequence[int] | torch.Tensor


def _as_float_rows(values: object, what: str) -> torch.Tensor:
    try:
        x = torch.as_tensor(values, dtype=torch.float32)
    except (OverflowError, ValueError, RuntimeError, TypeError):  # ragged, or 400 digits
        raise InvalidInput(f"{what} must be finite numbers, in rows of one length") from None
    return x.unsqueeze(0) if x.ndim == 1 else x


def images(x: object, x_dim: int) -> torch.Tensor:
    """(n, x_dim) pixels in [0, 1] from one image or a batch (any trailing shape)."""
    x = _as_float_rows(x, "pixels")
    if x.ndim == 0 or x.shape[0] == 0:
        raise InvalidInput("no image given")
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != x_dim:
        raise InvalidInput(f"an image must have {x_dim} pixels, got {x.shape[1]}")
    if not torch.isfinite(x).all():
        raise InvalidInput("pixels must be finite numbers")
    if x.min() < 0 or x.max() > 1:
        raise InvalidInput("pixels must lie in [0, 1]")
    return x


def codes(z: object, z_dim: int, subject: str = "the model") -> torch.Tensor:
    """(n, z_dim) finite latent codes from one code or a batch (``subject`` names the
    model in messages)."""
    if isinstance(z, list) and z and all(isinstance(row, list) for row in z) and any(
            len(row) != z_dim for row in z):  # ragged rows: name the length, not the shape
        if all(not row for row in z):
            raise InvalidInput("z must hold at least one code")
        raise InvalidInput(f"each code z must have {z_dim} numbers for {subject}")
    z = _as_float_rows(z, "z")
    if z.numel() == 0:
        raise InvalidInput("z must hold at least one code")
    if z.ndim != 2 or z.shape[1] != z_dim:
        raise InvalidInput(f"each code z must have {z_dim} numbers for {subject}")
    if not torch.isfinite(z).all():
        raise InvalidInput("z must hold finite numbers")
    return z


def labels(values: Labels, n: int, n_classes: int) -> torch.Tensor:
    """(n,) int64 class indices: one label for all n, or one each."""
    try:
        out = torch.as_tensor(values, dtype=torch.long).reshape(-1)
    except (OverflowError, ValueError, RuntimeError, TypeError):
        raise InvalidInput(f"labels must be integers in 0..{n_classes - 1}") from None
    if out.numel() == 1 and n != 1:
        out = out.expand(n)
    if out.numel() != n:
        raise InvalidInput(f"got {out.numel()} labels for {n} codes")
    if n and (out.min() < 0 or out.max() >= n_classes):
        raise InvalidInput(f"label must be in 0..{n_classes - 1}")
    return out


def one_hot(values: Labels, n: int, n_classes: int) -> torch.Tensor:
    """(n, n_classes) float32 one-hot rows of ``labels(values, n, n_classes)``."""
    return F.one_hot(labels(values, n, n_classes), n_classes).float()
