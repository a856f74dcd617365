"""The training loop: minibatches, epochs, validation, progress reports, the final test.

``Trainer(cfg, splits).fit()`` trains one model and returns it with its metrics.
Callers follow it through ``on_progress`` (a ``Progress`` every ``progress_every``
steps and at each epoch's end), can stop it through ``should_stop`` (checked at
every step boundary; it then raises ``TrainingStopped``) and can save a resumable
state through ``on_epoch_end``.

Determinism: the model's initial weights and dropout come from ``torch.manual_seed
(cfg.seed)``; minibatch order is a pure function of (seed, epoch) and the labeled
stream of (seed, pass), so a run resumed at an epoch boundary sees the same batches.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from aae.anomaly import calibrate
from aae.augment import augmentation, augmented
from aae.config import AAEConfig, Mode, Precision
from aae.data import Digits, MNISTSplits, neighbor_distances
from aae.device import default_device, resolve_precision, subnormals_flushed
from aae.errors import TrainingDiverged, TrainingStopped
from aae.evaluation import evaluate, fit_cluster_map, own_classifier, sample_fidelity
from aae.figures import latent_sample
from aae.model import AdversarialAutoencoder
from aae.optim import Optimizers, lr_scale, weight_average
from aae.phases import Batch, train_step

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """Where a run is: sent to ``on_progress`` callbacks."""

    event: str  # "step" or "epoch" (an epoch just ended and was validated)
    epoch: int  # 1-based epoch the step belongs to
    epochs: int  # epochs the run will do
    step: int  # steps done
    total_steps: int
    losses: dict[str, float]  # latest loss of each phase
    elapsed_s: float
    eta_s: float | None
    # measured at the end of the last epoch (None before the first): the error for
    # classifiers, the reconstruction loss for all
    validation_error: float | None = None
    validation_loss: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class TrainResult:
    model: AdversarialAutoencoder
    metrics: dict[str, Any] = field(default_factory=dict)
    # documents published beside the version: "latent", codes of test digits and their
    # labels for the latent scatter plot (aae.figures.latent_sample)
    extras: dict[str, dict] = field(default_factory=dict)


def _score(epoch: dict[str, Any]) -> float | None:
    """What ``keep_best`` minimises: the validation error, else the reconstruction loss."""
    score = epoch.get("validation_error")
    score = epoch.get("validation_loss") if score is None else score
    return score if score is not None and math.isfinite(score) else None


def _permutation(n: int, seed: int, stream: int, index: int) -> torch.Tensor:
    """A reproducible shuffle of range(n), independent of any other random state."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + stream * 7_919 + index)
    return torch.randperm(n, generator=g)


class Trainer:
    def __init__(self, cfg: AAEConfig, splits: MNISTSplits, *,
                 device: torch.device | str | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 on_epoch_end: Callable[[Trainer], None] | None = None,
                 progress_every: int = 50) -> None:
        self.cfg, self.splits = cfg, splits
        self.device = torch.device(device) if device is not None else default_device()
        self.precision = resolve_precision(cfg.precision, self.device)
        self.on_progress, self.should_stop = on_progress, should_stop
        self.on_epoch_end, self.progress_every = on_epoch_end, max(1, progress_every)

        self.source: Digits = splits.labeled if cfg.mode is Mode.SUPERVISED else splits.train
        if len(self.source) == 0:
            raise ValueError("there are no training digits")
        if cfg.mode is Mode.SEMI_SUPERVISED and len(splits.labeled) == 0:
            raise ValueError("semi_supervised training needs labeled digits (n_labels > 0)")
        self.batch_size = min(cfg.batch_size, len(self.source))
        self.steps_per_epoch = len(self.source) // self.batch_size
        total = cfg.epochs * self.steps_per_epoch
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)

        # per-digit VAT radii, computed from the images alone: a resumed run gets the same ones
        self.radius = (neighbor_distances(self.source.images, cfg.vat_radius_neighbor)
                       if cfg.vat_weight > 0 and cfg.vat_radius_neighbor > 0 else None)

        torch.manual_seed(cfg.seed)
        self.model = AdversarialAutoencoder(cfg).to(self.device).train()
        self.optimizers = Optimizers(self.model, fused=self.device.type in ("cpu", "cuda"))
        # a moving average of the weights (and buffers) that is validated and published
        self.augmentation = augmentation(cfg)
        self.average = weight_average(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.prior_rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.epoch = 0  # epochs completed
        self.step = 0  # steps completed
        self.elapsed_s = 0.0  # training time of earlier (resumed) attempts
        self.losses: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []  # one entry per completed epoch
        # keep_best: the epoch whose validated weights are published, and a copy of them
        self.best_epoch: int | None = None
        self.best: dict[str, torch.Tensor] | None = None

    @property
    def evaluated(self) -> AdversarialAutoencoder:
        """The model that is validated, tested and published: the moving average of the
        weights where ``ema_decay`` asks for one, else the trained model."""
        return self.average.module if self.average is not None else self.model

    # -- data ------------------------------------------------------------------------------
    def _batches(self, epoch: int) -> Iterator[Batch]:
        cfg, dev, b = self.cfg, self.device, self.batch_size
        order = _permutation(len(self.source), cfg.seed, 0, epoch)
        labeled = self._labeled_stream(epoch) if cfg.mode is Mode.SEMI_SUPERVISED else None
        sample_class = epoch >= cfg.sample_class_warmup
        for i in range(self.steps_per_epoch):
            rows = order[i * b:(i + 1) * b]
            x = self.source.images[rows].to(dev, non_blocking=True)
            if cfg.augment_unlabeled:
                x = augmented(x, self.augmentation)
            labels = (self.source.labels[rows].to(dev) if cfg.mode is Mode.SUPERVISED
                      else None)
            radius = self.radius[rows].to(dev) if self.radius is not None else None
            if labeled is not None:
                x_l, y_l = next(labeled)
                x_l = augmented(x_l, self.augmentation)
                yield Batch(x=x, x_labeled=x_l, y_labeled=y_l, radius=radius,
                            sample_class=sample_class)
            else:
                yield Batch(x=x, labels=labels, radius=radius, sample_class=sample_class)

    def _labeled_stream(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Labeled minibatches for one epoch: passes over the labeled set, reshuffled per pass."""
        labeled = self.splits.labeled
        b = min(self.cfg.labeled_batch_size or self.cfg.batch_size, len(labeled))
        per_pass = len(labeled) // b
        pass_index = epoch * self.steps_per_epoch // per_pass
        offset = epoch * self.steps_per_epoch % per_pass
        while True:
            order = _permutation(len(labeled), self.cfg.seed, 1, pass_index)
            for i in range(offset, per_pass):
                rows = order[i * b:(i + 1) * b]
                yield labeled.images[rows].to(self.device), labeled.labels[rows].to(self.device)
            pass_index, offset = pass_index + 1, 0

    # -- the loop --------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train from the current epoch to the end, then measure on the test set."""
        start = time.perf_counter()
        flushed = ", subnormals flushed" if subnormals_flushed() else ""
        logger.info("training %s on %s (%s, %s%s): %d steps", self.cfg.mode.value,
                    self.splits.source, self.device, self.precision.value, flushed,
                    self.total_steps)
        while self.step < self.total_steps:
            for batch in self._batches(self.epoch):
                if self.should_stop is not None and self.should_stop():
                    raise TrainingStopped(f"stopped at step {self.step} of {self.total_steps}")
                losses = self.train_batch(batch)
                if self.step % self.progress_every == 0 or self.step == self.total_steps:
                    self.losses = self._finite(losses)
                    last = self.history[-1] if self.history else {}
                    self._report("step", start, last.get("validation_error"),
                                 last.get("validation_loss"))
                if self.step >= self.total_steps:
                    break
            self.epoch += 1
            self.losses = self._finite(losses)
            validation = evaluate(self.evaluated, self.splits.validation)
            self.history.append({"epoch": self.epoch, "step": self.step, **self.losses,
                                 "validation_loss": validation.reconstruction_loss,
                                 "validation_error": validation.error})
            self._report("epoch", start, validation.error, validation.reconstruction_loss)
            self._keep_if_best()
            if self.on_epoch_end is not None:
                self.on_epoch_end(self)
        train_seconds = self.elapsed_s + time.perf_counter() - start
        if self.best is not None and self.best_epoch != self.epoch:
            self.evaluated.load_state_dict(self.best)
            logger.info("publishing epoch %d's weights, the best on validation",
                        self.best_epoch)
        model = self.evaluated.eval()
        return TrainResult(model, self._metrics(train_seconds),
                           {"latent": latent_sample(model, self.splits.test)})

    def _keep_if_best(self) -> None:
        """With ``keep_best``, copy the validated weights when the epoch just ended scores
        lowest so far (ties keep the earlier epoch); epochs without a finite score (no
        validation digits) are never chosen."""
        if not self.cfg.keep_best:
            return
        score = _score(self.history[-1])
        if score is None or (self.best_epoch is not None
                             and not score < _score(self.history[self.best_epoch - 1])):
            return
        self.best_epoch = self.epoch
        self.best = {k: v.detach().clone() for k, v in self.evaluated.state_dict().items()}

    def train_batch(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One step: the scheduled learning rates, every phase on ``batch``, the moving
        average of the weights where there is one; returns the phases' losses."""
        self.optimizers.scale_lr(lr_scale(self.cfg, self.step, self.steps_per_epoch,
                                          self.total_steps))
        losses = train_step(self.model, self.optimizers, batch, self.precision, self.prior_rng)
        if self.average is not None:
            self.average.update_parameters(self.model)
        self.step += 1
        return losses

    def _finite(self, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        """The step's losses as numbers; ``TrainingDiverged`` if one is not finite (checked
        where they are read anyway: at each progress report and epoch end)."""
        values = {k: v.item() for k, v in losses.items()}
        broken = {k: v for k, v in values.items() if not math.isfinite(v)}
        if broken:
            raise TrainingDiverged(
                f"training diverged by step {self.step} of {self.total_steps} (epoch "
                f"{self.epoch + 1}): {', '.join(f'{k} loss {v}' for k, v in broken.items())}; "
                f"lower the learning rates (lr_reconstruction {self.cfg.lr_reconstruction}, "
                f"lr_regularization {self.cfg.lr_regularization}, lr_semi_supervised "
                f"{self.cfg.lr_semi_supervised})"
                + ("" if self.precision is Precision.FP32 else ", or train in fp32"))
        return values

    def _report(self, event: str, start: float, validation_error: float | None = None,
                validation_loss: float | None = None) -> None:
        if self.on_progress is None:
            return
        elapsed = self.elapsed_s + time.perf_counter() - start
        rate = self.step / elapsed if elapsed > 0 else 0.0
        eta = (self.total_steps - self.step) / rate if rate > 0 else None
        epoch = self.epoch if event == "epoch" else self.epoch + 1
        self.on_progress(Progress(event=event, epoch=epoch, epochs=self.epochs, step=self.step,
                                  total_steps=self.total_steps, losses=dict(self.losses),
                                  elapsed_s=elapsed, eta_s=eta,
                                  validation_error=validation_error,
                                  validation_loss=validation_loss))

    def _metrics(self, train_seconds: float) -> dict[str, Any]:
        cluster_map = None
        if self.cfg.mode is Mode.CLUSTERING and len(self.splits.validation):
            cluster_map = fit_cluster_map(self.evaluated, self.splits.validation,
                                          self.cfg.cluster_mapping)
        test = evaluate(self.evaluated, self.splits.test, cluster_map=cluster_map)
        published = self.best_epoch if self.best is not None else self.epoch
        chosen = self.history[published - 1] if self.history else {}
        return {
            "mode": self.cfg.mode.value,
            "test_error": test.error,
            "test_reconstruction_loss": test.reconstruction_loss,
            "validation_error": chosen.get("validation_error"),
            "validation_loss": chosen.get("validation_loss"),
            "final_losses": dict(self.losses),
            "dataset": Path(self.splits.source).name,
            "data_dir": self.splits.source,
            "n_train": len(self.source),
            "n_labels": len(self.splits.labeled) if self.cfg.uses_labels
            and self.cfg.mode is not Mode.CLUSTERING else 0,
            "seed": self.cfg.seed,
            "steps": self.step,
            "epochs": self.epoch,
            "selected_epoch": published,  # whose weights are published (keep_best)
            "train_seconds": round(train_seconds, 3),
            "steps_per_second": round(self.step / train_seconds, 3) if train_seconds else None,
            "device": self.device.type,
            "precision": self.precision.value,
            "history": self.history,
            # the anomaly score's threshold, from the validation digits (aae.anomaly)
            "anomaly": calibrate(self.evaluated, self.splits.validation),
            # the share of GET /sample?label=L images its own classifier reads as L
            "sample_fidelity": self._sample_fidelity(),
        }

    def _sample_fidelity(self) -> dict[str, Any] | None:
        if not self.cfg.has_categorical:
            return None
        model = self.evaluated.eval()
        fidelity = sample_fidelity(model, own_classifier(model))
        return {"mean": round(fidelity.mean, 4),
                "per_class": [round(share, 4) for share in fidelity.per_class],
                "per_class_samples": fidelity.per_class_samples, "judge": "own classifier"}
