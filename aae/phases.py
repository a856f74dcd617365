"""The paper's training phases and the step that runs them on one minibatch.

Each step runs, as in the seed post and Makhzani et al. (2015):

1. the regularization phase's discriminator update,
2. the reconstruction phase (Q and P),
3. the regularization phase's generator update (Q fools D),
4. for semi-supervised models, the classification phase on a labeled minibatch.

Every phase keeps its own Adam optimizer and learning rate, as in the seed, so
each phase's gradient is normalised on its own. Unlike the seed, one encoder
pass serves phases 1-3, the discriminator's pass over the codes serves phases 1 and 3, and
every gradient is taken at the same weights before any update (a simultaneous
rather than alternating step). This drops three of the seed's six encoder
passes and its wasted backward pass into Q from the discriminator's loss. Matrix products run in bf16 where the hardware has native bf16
units (``Precision.AUTO``); weights, optimizer state and losses stay fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from aae.config import Mode, Precision
from aae.device import autocast
from aae.model import AdversarialAutoencoder


# -- the phases' objectives ------------------------------------------------------------

def reconstruction_loss(x_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reconstruction phase: minimise the cross-entropy between x and P(Q(x))."""
    return F.binary_cross_entropy_with_logits(x_logits.float(), x)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Regularization phase, discriminator: maximise log D(z') + log(1 - D(z)) for prior
    draws z' (real) and encoder codes z (fake)."""
    real, fake = real_logits.float(), fake_logits.float()
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Regularization phase, generator: minimise -log D(Q(x)), i.e. make the encoder's codes
    look drawn from the prior."""
    fake = fake_logits.float()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def classification_loss(y_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Semi-supervised classification phase: minimise the cross-entropy of q(y|x) on labels."""
    return F.cross_entropy(y_logits.float(), labels)


# -- one step ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Batch:
    x: torch.Tensor  # images, (B, 784)
    labels: torch.Tensor | None = None  # labels of x (supervised mode)
    x_labeled: torch.Tensor | None = None  # a labeled minibatch (semi-supervised mode)
    y_labeled: torch.Tensor | None = None


class Optimizers:
    """One Adam per phase, as in the seed. Adam is per-parameter, so one optimizer over Q and
    P (or over both discriminators) is the same as the seed's pair of optimizers."""

    def __init__(self, model: AdversarialAutoencoder, fused: bool) -> None:
        cfg = model.cfg
        encoder = list(model.encoder.parameters())
        self.autoencoder = encoder + list(model.decoder.parameters())
        self.encoder = encoder
        self.discriminators = list(model.d_gauss.parameters())
        if model.d_cat is not None:
            self.discriminators += list(model.d_cat.parameters())
        adam = dict(fused=fused)
        self.reconstruction = torch.optim.Adam(self.autoencoder, lr=cfg.lr_reconstruction, **adam)
        self.discriminator = torch.optim.Adam(self.discriminators, lr=cfg.lr_regularization, **adam)
        self.generator = torch.optim.Adam(encoder, lr=cfg.lr_regularization, **adam)
        self.classification = (torch.optim.Adam(encoder, lr=cfg.lr_semi_supervised, **adam)
                               if cfg.mode is Mode.SEMI_SUPERVISED else None)

    def named(self) -> dict[str, torch.optim.Optimizer]:
        named = {"reconstruction": self.reconstruction, "discriminator": self.discriminator,
                 "generator": self.generator}
        if self.classification is not None:
            named["classification"] = self.classification
        return named


def _apply(optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
           grads: tuple[torch.Tensor | None, ...]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    optimizer.step()
    for p in params:
        p.grad = None


def _judge(d: nn.Module, real: torch.Tensor, fake: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator on prior draws and on codes; returns (D loss, G loss). Two passes
    rather than one over both, so the generator's gradient flows back through codes only."""
    fake_logits = d(fake)
    return discriminator_loss(d(real), fake_logits), generator_loss(fake_logits)


def train_step(model: AdversarialAutoencoder, opt: Optimizers, batch: Batch,
               precision: Precision, generator: torch.Generator | None = None
               ) -> dict[str, torch.Tensor]:
    """One minibatch through every phase of the model's mode; returns the detached losses.

    All forward passes come first, at the current weights; then each phase's gradient is
    taken with respect to its own networks only (``autograd.grad`` with those parameters
    as inputs, so D's loss never reaches Q and the generator's loss never reaches D); then
    each phase's optimizer steps.
    """
    cfg, device, n = model.cfg, batch.x.device, batch.x.shape[0]
    losses: dict[str, torch.Tensor] = {}
    with autocast(precision, device):
        z, y_logits = model.encoder(batch.x)
        if cfg.has_categorical:
            y = F.softmax(y_logits.float(), dim=1)
        elif cfg.mode is Mode.SUPERVISED:
            y = F.one_hot(batch.labels, cfg.n_classes).float()
        else:
            y = None
        # Regularization: the discriminators see prior draws and codes in one pass.
        real_z = model.prior.sample(n, generator, batch.labels).to(device)
        d_loss, g_loss = _judge(model.d_gauss, real_z, z)
        if model.d_cat is not None:
            real_y = model.cat_prior.sample(n, generator).to(device)
            d_cat_loss, g_cat_loss = _judge(model.d_cat, real_y, y)
            d_loss, g_loss = d_loss + d_cat_loss, g_loss + g_cat_loss
        # Reconstruction.
        rec_loss = reconstruction_loss(model.decoder(z, y), batch.x)
        # Semi-supervised classification on the labeled minibatch.
        c_loss = None
        if cfg.mode is Mode.SEMI_SUPERVISED and batch.x_labeled is not None:
            _, yl_logits = model.encoder(batch.x_labeled)
            c_loss = classification_loss(yl_logits, batch.y_labeled)

    grad = torch.autograd.grad
    steps = [(opt.discriminator, opt.discriminators,
              grad(d_loss, opt.discriminators, retain_graph=True)),
             (opt.reconstruction, opt.autoencoder,
              grad(rec_loss, opt.autoencoder, retain_graph=True, allow_unused=True)),
             (opt.generator, opt.encoder, grad(g_loss, opt.encoder, allow_unused=True))]
    if c_loss is not None:
        assert opt.classification is not None
        steps.append((opt.classification, opt.encoder,
                      grad(c_loss, opt.encoder, allow_unused=True)))
        losses["classification"] = c_loss.detach()
    for optimizer, params, grads in steps:
        _apply(optimizer, params, grads)
    losses.update(reconstruction=rec_loss.detach(), discriminator=d_loss.detach(),
                  generator=g_loss.detach())
    return losses
