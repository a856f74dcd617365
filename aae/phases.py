"""The paper's training phases and the steps that run them on one minibatch.

Each step runs the phases of Makhzani et al. (2015) and the seed post:

- reconstruction: Q and P minimise the cross-entropy of P(Q(x)) against x;
- regularization: the discriminator learns to tell prior draws from codes, then
  the encoder (the generator) learns to fool it;
- for semi-supervised models, classification: q(y|x) on a labeled minibatch, plus
  optional consistency terms on the unlabeled one (virtual adversarial training,
  conditional entropy, marginal entropy); for clustering models, where configured,
  those consistency terms alone.

Every phase keeps its own optimizer and learning rate (``aae.optim``). Two ways to
run them (``AAEConfig.step_mode``):

- ``simultaneous`` (the default since the first release): one encoder pass serves
  reconstruction and regularization, one discriminator pass over the codes serves
  both of D's phases, and every gradient is taken at the same weights before any
  update. Three fewer encoder passes than the seed's step.
- ``sequential`` (the paper): each phase runs its own forward pass and updates before
  the next phase runs.

Matrix products run in bf16 where the hardware has native bf16 units
(``Precision.AUTO``); weights, optimizer state and losses stay fp32. Random draws
(input noise, VAT directions) come from torch's global generator, so a run is
deterministic on the CPU and resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from aae.config import AAEConfig, Mode, Precision, StepMode
from aae.device import autocast
from aae.model import AdversarialAutoencoder
from aae.optim import Optimizers


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


def entropy_loss(y_logits: torch.Tensor) -> torch.Tensor:
    """Conditional entropy of q(y|x) on unlabeled digits: minimising it asks for confident
    predictions away from the data (Grandvalet & Bengio 2005)."""
    log_p = F.log_softmax(y_logits.float(), dim=1)
    return -(log_p.exp() * log_p).sum(1).mean()


def marginal_entropy_loss(y_logits: torch.Tensor) -> torch.Tensor:
    """log K minus the entropy of the minibatch's mean q(y|x): 0 when the K classes are
    used evenly. Minimising it, with the conditional entropy, maximises the mutual
    information between x and y (Hu et al. 2017, IMSAT); alone it keeps clusters from
    merging."""
    mean = F.softmax(y_logits.float(), dim=1).mean(0)
    return math.log(mean.numel()) + (mean * torch.log(mean.clamp_min(1e-12))).sum()


def _kl(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(p_target || p) per batch, mean over rows."""
    log_t = F.log_softmax(target_logits.float(), dim=1)
    return (log_t.exp() * (log_t - F.log_softmax(logits.float(), dim=1))).sum(1).mean()


def _unit(d: torch.Tensor) -> torch.Tensor:
    return d / (d.flatten(1).norm(dim=1, keepdim=True) + 1e-12)


def vat_loss(encoder: nn.Module, x: torch.Tensor, target_logits: torch.Tensor,
             epsilon: float | torch.Tensor, xi: float) -> torch.Tensor:
    """Virtual adversarial training (Miyato et al. 2018): minimise KL(q(y|x) || q(y|x + r))
    for the perturbation r of L2 norm ``epsilon`` (one for all, or one per image: (B, 1))
    that changes q(y|x) most, found with one power iteration. ``target_logits`` (q(y|x),
    no gradient) is the reference."""
    target = target_logits.detach()
    d = (_unit(torch.randn_like(x)) * xi).requires_grad_()
    _, probe = encoder(x + d)
    direction, = torch.autograd.grad(_kl(target, probe), d)
    _, adversarial = encoder(x + epsilon * _unit(direction.detach()))
    return _kl(target, adversarial)


@contextmanager
def clean_passes(net: nn.Module) -> Iterator[None]:
    """``net``'s forward passes without dropout, and with batch norm (if any) normalising
    by the batch's own statistics without folding them into its running ones: passes
    that measure the network, such as VAT's on perturbed digits, and leave no trace in
    it. The backward passes taken later need no such context."""
    dropouts = [m for m in net.modules() if isinstance(m, nn.Dropout) and m.training]
    norms = [m for m in net.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in dropouts:
        m.eval()
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in dropouts:
            m.train()
        for m in norms:
            m.track_running_stats = True


def _vat(cfg: AAEConfig, encoder: nn.Module, x_in: torch.Tensor, y_logits: torch.Tensor,
         radius: torch.Tensor | None) -> torch.Tensor:
    """The weighted VAT term on the unlabeled minibatch: against ``y_logits`` through the
    encoder with its dropout (``vat_dropout``), or against a clean q(y|x) through clean
    passes (no dropout, batch norm's running statistics left alone). ``radius``: the
    digits' neighbour distances where ``vat_radius_neighbor`` asks for per-digit radii."""
    epsilon = cfg.vat_epsilon if radius is None else cfg.vat_epsilon * radius.unsqueeze(1)
    if cfg.vat_dropout:
        return cfg.vat_weight * vat_loss(encoder, x_in, y_logits, epsilon, cfg.vat_xi)
    with clean_passes(encoder):
        with torch.no_grad():
            _, target = encoder(x_in)
        return cfg.vat_weight * vat_loss(encoder, x_in, target, epsilon, cfg.vat_xi)


# -- one step ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Batch:
    x: torch.Tensor  # images, (B, 784)
    labels: torch.Tensor | None = None  # labels of x (supervised mode)
    x_labeled: torch.Tensor | None = None  # a labeled minibatch (semi-supervised mode)
    y_labeled: torch.Tensor | None = None
    radius: torch.Tensor | None = None  # x's neighbour distances (per-digit VAT radius)
    sample_class: bool = True  # the sample-fidelity term applies (past its warm-up)


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


def _encoder_input(cfg: AAEConfig, x: torch.Tensor) -> torch.Tensor:
    """x with the configured Gaussian noise (the paper's corruption of Q's input)."""
    if cfg.input_noise_std > 0:
        return x + cfg.input_noise_std * torch.randn_like(x)
    return x


def shifted(x: torch.Tensor, max_shift: int, side: int = 28) -> torch.Tensor:
    """Each image moved by its own random offset of up to ``max_shift`` pixels on each axis,
    the border filled with black (data augmentation of the labeled digits)."""
    n = x.shape[0]
    padded = F.pad(x.reshape(n, side, side), (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), device=x.device)
    rows = (offsets[:, :1] + torch.arange(side, device=x.device)).unsqueeze(2)  # (n, side, 1)
    cols = (offsets[:, 1:] + torch.arange(side, device=x.device)).unsqueeze(1)  # (n, 1, side)
    index = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded[index, rows, cols].reshape(n, side * side)


def _class_input(cfg: AAEConfig, model: AdversarialAutoencoder, y_logits: torch.Tensor | None,
                 labels: torch.Tensor | None) -> torch.Tensor | None:
    """What the decoder and D_cat see of the class: q(y|x), the given one-hot label, or
    nothing (unsupervised)."""
    if y_logits is not None:
        return F.softmax(y_logits.float(), dim=1)
    if cfg.mode is Mode.SUPERVISED:
        return F.one_hot(labels, cfg.n_classes).float()
    return None


def _regularization(model: AdversarialAutoencoder, z: torch.Tensor, y: torch.Tensor | None,
                    batch: Batch, generator: torch.Generator | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(D loss, G loss) of the codes against prior draws, over D_gauss and D_cat."""
    n, device = z.shape[0], z.device
    real_z = model.prior.sample(n, generator, batch.labels).to(device)
    d_loss, g_loss = _judge(model.d_gauss, real_z, z)
    if model.d_cat is not None:
        real_y = model.cat_prior.sample(n, generator).to(device)
        d_cat_loss, g_cat_loss = _judge(model.d_cat, real_y, y)
        d_loss, g_loss = d_loss + d_cat_loss, g_loss + g_cat_loss
    return d_loss, g_loss


def _decoder_class(cfg: AAEConfig, y: torch.Tensor | None) -> torch.Tensor | None:
    """The class input of the reconstruction, detached where ``reconstruction_class_grad``
    is off (D_cat still sees q(y|x) with its gradient)."""
    if y is None or cfg.reconstruction_class_grad:
        return y
    return y.detach()


def sample_class_loss(model: AdversarialAutoencoder, n: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample fidelity, for the decoder: minimise the cross-entropy of q(y | P(z, y)) against
    y for prior draws z ~ p(z), y ~ Cat(n_classes), so that a sample of class y reads as y.
    The encoder judges through clean passes (no dropout, batch norm's running statistics
    left alone); only the decoder is meant to take this gradient."""
    cfg, device = model.cfg, model.device
    labels = torch.randint(cfg.n_classes, (n,), generator=generator).to(device)
    z = model.prior.sample(n, generator).to(device)
    x = torch.sigmoid(model.decoder(z, F.one_hot(labels, cfg.n_classes).float()))
    with clean_passes(model.encoder):
        _, logits = model.encoder(x)
    return cfg.sample_class_weight * F.cross_entropy(logits.float(), labels)


def _reconstruction_grads(model: AdversarialAutoencoder, opt: Optimizers,
                          rec_loss: torch.Tensor, sample_loss: torch.Tensor | None,
                          retain_graph: bool) -> tuple[torch.Tensor | None, ...]:
    """The reconstruction phase's gradient over Q and P, with the sample-fidelity term's
    gradient added for P's parameters alone (the tail of ``opt.autoencoder``)."""
    grads = torch.autograd.grad(rec_loss, opt.autoencoder, retain_graph=retain_graph,
                                allow_unused=True)
    if sample_loss is None:
        return grads
    n_decoder = len(opt.autoencoder) - len(opt.encoder)
    extra = torch.autograd.grad(sample_loss, opt.autoencoder[-n_decoder:],
                                retain_graph=retain_graph, allow_unused=True)
    head = grads[:-n_decoder]
    tail = tuple(g if e is None else (e if g is None else g + e)
                 for g, e in zip(grads[-n_decoder:], extra, strict=True))
    return head + tail


def _classifies(cfg: AAEConfig, batch: Batch) -> bool:
    """Whether the classification phase runs on this minibatch (semi-supervised: only
    with a labeled minibatch beside it)."""
    return cfg.has_classification_phase and (cfg.mode is Mode.CLUSTERING
                                             or batch.x_labeled is not None)


def _classification(model: AdversarialAutoencoder, batch: Batch, x_in: torch.Tensor,
                    y_logits: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The classification phase's terms: cross-entropy on the labeled minibatch (semi-
    supervised) and, where configured, consistency on the unlabeled one (``y_logits``:
    q(y|x_in) of it), which in clustering mode is all the phase has."""
    cfg = model.cfg
    if not _classifies(cfg, batch):
        return {}
    terms: dict[str, torch.Tensor] = {}
    if cfg.mode is Mode.SEMI_SUPERVISED:
        x_labeled = batch.x_labeled
        if cfg.label_shift:
            x_labeled = shifted(x_labeled, cfg.label_shift)
        _, yl_logits = model.encoder(_encoder_input(cfg, x_labeled))
        terms["classification"] = classification_loss(yl_logits, batch.y_labeled)
    if cfg.vat_weight > 0:
        terms["vat"] = _vat(cfg, model.encoder, x_in, y_logits, batch.radius)
    if cfg.entropy_weight > 0:
        terms["entropy"] = cfg.entropy_weight * entropy_loss(y_logits)
    if cfg.marginal_entropy_weight > 0:
        terms["marginal_entropy"] = (cfg.marginal_entropy_weight
                                     * marginal_entropy_loss(y_logits))
    return terms


def train_step(model: AdversarialAutoencoder, opt: Optimizers, batch: Batch,
               precision: Precision, generator: torch.Generator | None = None
               ) -> dict[str, torch.Tensor]:
    """One minibatch through every phase of the model's mode, as ``cfg.step_mode`` says;
    returns the detached losses by phase (consistency terms by name, weighted)."""
    if model.cfg.step_mode is StepMode.SEQUENTIAL:
        return sequential_step(model, opt, batch, precision, generator)
    return simultaneous_step(model, opt, batch, precision, generator)


def simultaneous_step(model: AdversarialAutoencoder, opt: Optimizers, batch: Batch,
                      precision: Precision, generator: torch.Generator | None = None
                      ) -> dict[str, torch.Tensor]:
    """All forward passes first, at the current weights; then each phase's gradient with
    respect to its own networks only (``autograd.grad`` with those parameters as inputs,
    so D's loss never reaches Q and the generator's loss never reaches D); then each
    phase's optimizer steps."""
    cfg, device = model.cfg, batch.x.device
    with autocast(precision, device):
        x_in = _encoder_input(cfg, batch.x)
        z, y_logits = model.encoder(x_in)
        y = _class_input(cfg, model, y_logits, batch.labels)
        d_loss, g_loss = _regularization(model, z, y, batch, generator)
        rec_loss = reconstruction_loss(model.decoder(z, _decoder_class(cfg, y)), batch.x)
        c_terms = _classification(model, batch, x_in, y_logits)
        s_loss = (sample_class_loss(model, batch.x.shape[0], generator)
                  if cfg.sample_class_weight > 0 and batch.sample_class else None)

    grad = torch.autograd.grad
    steps = [(opt.discriminator, opt.discriminators, d_loss),
             (opt.reconstruction, opt.autoencoder, rec_loss),
             (opt.generator, opt.encoder, g_loss)]
    if c_terms:
        assert opt.classification is not None
        steps.append((opt.classification, opt.encoder, sum(c_terms.values())))
    grads = [_reconstruction_grads(model, opt, loss, s_loss, True)
             if optimizer is opt.reconstruction else
             grad(loss, params, retain_graph=i < len(steps) - 1, allow_unused=True)
             for i, (optimizer, params, loss) in enumerate(steps)]
    for (optimizer, params, _), g in zip(steps, grads, strict=True):
        _apply(optimizer, params, g)
    losses = {name: t.detach() for name, t in c_terms.items()}
    if s_loss is not None:
        losses["sample_class"] = s_loss.detach()
    losses.update(reconstruction=rec_loss.detach(), discriminator=d_loss.detach(),
                  generator=g_loss.detach())
    return losses


def sequential_step(model: AdversarialAutoencoder, opt: Optimizers, batch: Batch,
                    precision: Precision, generator: torch.Generator | None = None
                    ) -> dict[str, torch.Tensor]:
    """The paper's order: each phase runs its own forward pass at the weights the previous
    phase left, and updates before the next one: reconstruction, discriminator,
    generator, classification."""
    cfg, device = model.cfg, batch.x.device
    grad = torch.autograd.grad
    with autocast(precision, device):
        x_in = _encoder_input(cfg, batch.x)

        z, y_logits = model.encoder(x_in)
        y = _class_input(cfg, model, y_logits, batch.labels)
        rec_loss = reconstruction_loss(model.decoder(z, _decoder_class(cfg, y)), batch.x)
        s_loss = (sample_class_loss(model, batch.x.shape[0], generator)
                  if cfg.sample_class_weight > 0 and batch.sample_class else None)
        _apply(opt.reconstruction, opt.autoencoder,
               _reconstruction_grads(model, opt, rec_loss, s_loss, False))

        with torch.no_grad():
            z, y_logits = model.encoder(x_in)
            y = _class_input(cfg, model, y_logits, batch.labels)
        d_loss, _ = _regularization(model, z, y, batch, generator)
        _apply(opt.discriminator, opt.discriminators, grad(d_loss, opt.discriminators))

        z, y_logits = model.encoder(x_in)
        y = _class_input(cfg, model, y_logits, batch.labels)
        fake = [model.d_gauss(z)] + ([model.d_cat(y)] if model.d_cat is not None else [])
        g_loss = sum(generator_loss(f) for f in fake)
        _apply(opt.generator, opt.encoder, grad(g_loss, opt.encoder, allow_unused=True))

        losses: dict[str, torch.Tensor] = {}
        if _classifies(cfg, batch):
            y_logits = model.encoder(x_in)[1] if cfg.has_consistency_terms else None
            c_terms = _classification(model, batch, x_in, y_logits)
            assert opt.classification is not None
            _apply(opt.classification, opt.encoder,
                   grad(sum(c_terms.values()), opt.encoder, allow_unused=True))
            losses = {name: t.detach() for name, t in c_terms.items()}
    if s_loss is not None:
        losses["sample_class"] = s_loss.detach()
    losses.update(reconstruction=rec_loss.detach(), discriminator=d_loss.detach(),
                  generator=g_loss.detach())
    return losses
