"""The optimizers of the training phases, their learning-rate schedule, and the moving
average of the weights.

Every phase keeps its own optimizer and learning rate, as in the seed and the paper,
so each phase's gradient is scaled on its own. The schedule is a pure function of
the step, so a resumed run needs no scheduler state to continue exactly.
"""

from __future__ import annotations

import math

import torch
from torch.optim.swa_utils import AveragedModel

from aae.config import AAEConfig, LRSchedule, Optimizer


def make_optimizer(params: list[torch.Tensor], lr: float, cfg: AAEConfig,
                   fused: bool) -> torch.optim.Optimizer:
    if cfg.optimizer is Optimizer.SGD:
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)
    return torch.optim.Adam(params, lr=lr, fused=fused)


def lr_scale(cfg: AAEConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """The factor on every base learning rate for the step about to run (0-based)."""
    if cfg.lr_schedule is LRSchedule.STEP:
        epoch = step // steps_per_epoch  # epochs completed before this step
        return cfg.lr_gamma ** sum(epoch >= m for m in cfg.lr_milestones)
    if cfg.lr_schedule is LRSchedule.COSINE:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))
    return 1.0


def weight_average(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights and buffers (torch's
    ``AveragedModel``), with a warm-up: while fewer than about 1 / (1 - decay) steps have
    been averaged it is their plain mean, so a short run publishes the mean of its
    weights rather than its first ones; from there on each step moves it by 1 - decay."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor],
               n_averaged: torch.Tensor) -> None:
        n = int(n_averaged)
        if not averaged[0].is_floating_point():  # counters (batch norm's) follow the model
            torch._foreach_copy_(averaged, current)
            return
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, n / (n + 1)))

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


class Optimizers:
    """One optimizer per phase. Adam and SGD are per-parameter, so one optimizer over Q and
    P (or over both discriminators) is the same as the seed's pair of optimizers."""

    def __init__(self, model: torch.nn.Module, fused: bool) -> None:
        cfg = model.cfg
        encoder = list(model.encoder.parameters())
        self.autoencoder = encoder + list(model.decoder.parameters())
        self.encoder = encoder
        self.discriminators = list(model.d_gauss.parameters())
        if model.d_cat is not None:
            self.discriminators += list(model.d_cat.parameters())
        self.reconstruction = make_optimizer(self.autoencoder, cfg.lr_reconstruction, cfg, fused)
        self.discriminator = make_optimizer(self.discriminators, cfg.lr_regularization, cfg,
                                            fused)
        self.generator = make_optimizer(encoder, cfg.lr_regularization, cfg, fused)
        self.classification = (make_optimizer(encoder, cfg.lr_semi_supervised, cfg, fused)
                               if cfg.has_classification_phase else None)
        self._base_lr = {name: opt.param_groups[0]["lr"] for name, opt in self.named().items()}

    def named(self) -> dict[str, torch.optim.Optimizer]:
        named = {"reconstruction": self.reconstruction, "discriminator": self.discriminator,
                 "generator": self.generator}
        if self.classification is not None:
            named["classification"] = self.classification
        return named

    def scale_lr(self, factor: float) -> None:
        """Set every phase's learning rate to its base rate times ``factor``."""
        for name, opt in self.named().items():
            for group in opt.param_groups:
                group["lr"] = self._base_lr[name] * factor
