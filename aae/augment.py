"""Training digits changed the ways people's handwriting differs from MNIST's: rotated,
scaled, sheared, moved, bolder or thinner strokes, elastically distorted (Simard et al.
2003). One random change per digit, drawn afresh every step, on a whole minibatch at once
(one affine grid with a smooth random displacement added, one ``grid_sample``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from aae.config import AAEConfig

SIDE = 28
THINNEST = 0.5  # of a 3x3 erosion: one whole step wipes out most of a 2-pixel stroke
_ELASTIC_GRID = 5  # the displacement field: random at 5x5 points, smoothly interpolated


@dataclass(frozen=True)
class Augmentation:
    rotation: float = 0.0  # degrees, at most either way
    scale: float = 0.0  # relative, at most either way (0.1: 90% to 110%)
    shear: float = 0.0  # horizontal shear factor, at most either way
    translation: float = 0.0  # pixels, at most either way on each axis
    stroke: float = 0.0  # strokes dilated by up to this many 3x3 steps, or eroded by up to
    # half of one (fractions blend)
    elastic: float = 0.0  # pixels: the largest displacement of the smooth distortion
    resolution: int = 0  # digits reduced to a side of this many pixels or more, then enlarged

    @property
    def active(self) -> bool:
        return any((self.rotation, self.scale, self.shear, self.translation, self.stroke,
                    self.elastic, self.resolution))


def augmentation(cfg: AAEConfig) -> Augmentation:
    """The changes a config asks for (its ``augment_*`` fields)."""
    return Augmentation(rotation=cfg.augment_rotation, scale=cfg.augment_scale,
                        shear=cfg.augment_shear, translation=cfg.augment_translation,
                        stroke=cfg.augment_stroke, elastic=cfg.augment_elastic,
                        resolution=cfg.augment_resolution)


def augmented(x: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """(n, 784) digits in [0, 1], each changed by its own random draw (torch's global
    generator, as dropout's); the same tensor where nothing is asked."""
    if not aug.active:
        return x
    n, device = x.shape[0], x.device
    images = x.reshape(n, 1, SIDE, SIDE)

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, device=device) * 2 - 1) * limit

    if aug.resolution:
        images = _lower_resolution(images, aug.resolution)
    if aug.stroke:  # bolder by up to ``stroke`` steps, thinner by up to half of one
        amount = torch.rand(n, device=device) * (aug.stroke + THINNEST) - THINNEST
        images = _stroked(images, amount)
    if not any((aug.rotation, aug.scale, aug.shear, aug.translation, aug.elastic)):
        return images.clamp(0, 1).reshape(n, SIDE * SIDE)
    angle = uniform(math.radians(aug.rotation))
    scale = 1 + uniform(aug.scale)
    shear = uniform(aug.shear)
    shift = torch.stack([uniform(aug.translation), uniform(aug.translation)], 1) * 2 / SIDE
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # output -> input coordinates: the inverse of scaling, rotating and shearing the digit
    theta = torch.stack([torch.stack([cos, -sin + shear * cos, shift[:, 0]], 1),
                         torch.stack([sin, cos + shear * sin, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, SIDE, SIDE], align_corners=False)
    if aug.elastic:
        coarse = torch.randn(n, 2, _ELASTIC_GRID, _ELASTIC_GRID, device=device)
        field = F.interpolate(coarse, size=(SIDE, SIDE), mode="bicubic", align_corners=True)
        field = field / field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6)
        grid = grid + field.permute(0, 2, 3, 1) * aug.elastic * 2 / SIDE
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.clamp(0, 1).reshape(n, SIDE * SIDE)


def _stroked(images: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Each digit's strokes dilated (amount > 0) or eroded (< 0) by |amount| 3x3 steps,
    a fraction of a step blending the two nearest."""
    out = images
    level, previous = images, images
    steps = int(math.ceil(amount.abs().max().item()))
    for sign in (1, -1):
        level = images
        for step in range(steps):
            previous = level
            level = (F.max_pool2d(level, 3, 1, 1) if sign > 0
                     else -F.max_pool2d(-level, 3, 1, 1))
            share = (sign * amount - step).clamp(0, 1).view(-1, 1, 1, 1)
            out = out + share * (level - previous)
    return out


def _lower_resolution(images: torch.Tensor, smallest: int) -> torch.Tensor:
    """Half the digits (drawn at random) reduced to a side of ``smallest`` to SIDE pixels
    (area average) and enlarged back (bilinear): thumbnails blown up."""
    n = images.shape[0]
    sides = torch.randint(smallest, SIDE + 1, (n,))
    sides[torch.rand(n) < 0.5] = SIDE
    out = images.clone()
    for side in sides.unique().tolist():
        if side == SIDE:
            continue
        rows = (sides == side).nonzero().squeeze(1).to(images.device)
        small = F.interpolate(images[rows], size=(side, side), mode="area")
        out[rows] = F.interpolate(small, size=(SIDE, SIDE), mode="bilinear",
                                  align_corners=False)
    return out
