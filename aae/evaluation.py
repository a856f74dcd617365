"""How good a model is: reconstruction loss and classification error on held-out digits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from aae.config import Mode
from aae.data import Digits
from aae.model import AdversarialAutoencoder


@dataclass(frozen=True)
class Evaluation:
    reconstruction_loss: float  # mean per-pixel binary cross-entropy of P(Q(x)) against x
    error: float | None  # fraction misclassified; None for models that cannot classify


@torch.no_grad()
def _predict(model: AdversarialAutoencoder, digits: Digits, batch_size: int
             ) -> tuple[float, torch.Tensor | None]:
    """Mean reconstruction loss and the argmax class (or cluster) of every digit."""
    was_training = model.training
    model.eval()
    total, predictions = 0.0, []
    try:
        for start in range(0, len(digits), batch_size):
            x = digits.images[start:start + batch_size].to(model.device)
            labels = digits.labels[start:start + batch_size]
            code = model.encode(x)
            if model.cfg.mode is Mode.SUPERVISED:
                x_hat = model.decode(code.z, labels=labels)
            else:
                x_hat = model.decode(code.z, y=code.y)
            total += F.binary_cross_entropy(x_hat, x, reduction="sum").item()
            if code.y is not None:
                predictions.append(code.y.argmax(1).cpu())
    finally:
        model.train(was_training)
    loss = total / max(1, len(digits) * model.cfg.x_dim)
    return loss, (torch.cat(predictions) if predictions else None)


def cluster_labels(clusters: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Map each of k clusters to the most frequent true label among its members (the
    paper's evaluation of unsupervised clustering). Empty clusters map to label 0."""
    counts = torch.zeros(k, int(labels.max()) + 1, dtype=torch.long)
    counts.index_put_((clusters, labels), torch.ones_like(labels), accumulate=True)
    return counts.argmax(1)


def evaluate(model: AdversarialAutoencoder, digits: Digits, batch_size: int = 1000,
             cluster_map: torch.Tensor | None = None) -> Evaluation:
    """Reconstruction loss, and for classifiers the error rate. A clustering model is scored
    through ``cluster_map`` (cluster -> label), by default fitted on ``digits`` itself."""
    if len(digits) == 0:
        return Evaluation(reconstruction_loss=float("nan"), error=None)
    loss, predicted = _predict(model, digits, batch_size)
    if predicted is None:
        return Evaluation(loss, None)
    if model.cfg.mode is Mode.CLUSTERING:
        if cluster_map is None:
            cluster_map = cluster_labels(predicted, digits.labels, model.cfg.n_classes)
        predicted = cluster_map[predicted]
    return Evaluation(loss, (predicted != digits.labels).float().mean().item())


def fit_cluster_map(model: AdversarialAutoencoder, digits: Digits,
                    batch_size: int = 1000) -> torch.Tensor:
    """cluster -> label, fitted on labeled ``digits`` (e.g. the validation split)."""
    _, predicted = _predict(model, digits, batch_size)
    assert predicted is not None, "only models with a categorical code have clusters"
    return cluster_labels(predicted, digits.labels, model.cfg.n_classes)
