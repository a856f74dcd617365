"""How good a model is: reconstruction loss and classification error on held-out digits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from aae.config import ClusterMapping, Mode
from aae.data import Digits
from aae.model import AdversarialAutoencoder


@dataclass(frozen=True)
class Evaluation:
    reconstruction_loss: float  # mean per-pixel binary cross-entropy of P(Q(x)) against x
    error: float | None  # fraction misclassified; None for models that cannot classify


@torch.no_grad()
def _predict(model: AdversarialAutoencoder, digits: Digits, batch_size: int
             ) -> tuple[float, torch.Tensor | None]:
    """Mean reconstruction loss and q(y|x) of every digit (None without a categorical code)."""
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
                predictions.append(code.y.cpu())
    finally:
        model.train(was_training)
    loss = total / max(1, len(digits) * model.cfg.x_dim)
    return loss, (torch.cat(predictions) if predictions else None)


def cluster_labels(clusters: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Majority vote: map each of k clusters to the most frequent true label among its
    members. Empty clusters map to label 0."""
    counts = torch.zeros(k, int(labels.max()) + 1, dtype=torch.long)
    counts.index_put_((clusters, labels), torch.ones_like(labels), accumulate=True)
    return counts.argmax(1)


def paper_cluster_labels(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The paper's mapping (Makhzani et al. 2015, section 6): cluster i takes the label of
    the example with the highest q(y_i|x). ``probabilities`` is (examples, clusters)."""
    return labels[probabilities.argmax(0)]


def map_clusters(probabilities: torch.Tensor, labels: torch.Tensor,
                 how: ClusterMapping = ClusterMapping.MAJORITY) -> torch.Tensor:
    """cluster -> label from q(y|x) of labeled examples, by ``how``."""
    if how is ClusterMapping.PAPER:
        return paper_cluster_labels(probabilities, labels)
    return cluster_labels(probabilities.argmax(1), labels, probabilities.shape[1])


def evaluate(model: AdversarialAutoencoder, digits: Digits, batch_size: int = 1000,
             cluster_map: torch.Tensor | None = None) -> Evaluation:
    """Reconstruction loss, and for classifiers the error rate. A clustering model is scored
    through ``cluster_map`` (cluster -> label), by default fitted on ``digits`` itself."""
    if len(digits) == 0:
        return Evaluation(reconstruction_loss=float("nan"), error=None)
    loss, probabilities = _predict(model, digits, batch_size)
    if probabilities is None:
        return Evaluation(loss, None)
    predicted = probabilities.argmax(1)
    if model.cfg.mode is Mode.CLUSTERING:
        if cluster_map is None:
            cluster_map = map_clusters(probabilities, digits.labels, model.cfg.cluster_mapping)
        predicted = cluster_map[predicted]
    return Evaluation(loss, (predicted != digits.labels).float().mean().item())


def fit_cluster_map(model: AdversarialAutoencoder, digits: Digits,
                    how: ClusterMapping = ClusterMapping.MAJORITY,
                    batch_size: int = 1000) -> torch.Tensor:
    """cluster -> label, fitted on labeled ``digits`` (e.g. the validation split)."""
    _, probabilities = _predict(model, digits, batch_size)
    assert probabilities is not None, "only models with a categorical code have clusters"
    return map_clusters(probabilities, digits.labels, how)


@dataclass(frozen=True)
class SampleFidelity:
    """How often samples drawn for a class are read as that class."""

    mean: float  # over the classes
    per_class: list[float]  # index = the class asked for
    per_class_samples: int


@torch.no_grad()
def sample_fidelity(model: AdversarialAutoencoder, read: Callable[[torch.Tensor], torch.Tensor],
                    per_class: int = 100, seed: int = 0) -> SampleFidelity:
    """Draw ``per_class`` samples of each class the way ``GET /sample?label=L`` does
    (``model.sample``) and return the share that ``read`` (images -> the class each is read
    as) reads as the class asked for. ``read`` may be the model's own classifier
    (``own_classifier``) or an independent judge."""
    generator = torch.Generator().manual_seed(seed)
    shares = []
    for label in range(model.cfg.n_classes):
        images = model.sample(per_class, label, generator)
        shares.append((read(images).cpu() == label).float().mean().item())
    return SampleFidelity(sum(shares) / len(shares), shares, per_class)


def own_classifier(model: AdversarialAutoencoder) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's own q(y|x) argmax, as a reader of its samples (a cluster index for
    clustering models, which is also what their samples are asked by)."""
    return lambda images: model.classify(images).argmax(1)
