"""How versions are compared and chosen: by a validation metric, never by the test set.

``Metric`` names the figures a version can be ranked or gated by, all measured on the
validation split at the end of training and all better when lower. ``promote`` is the
metric-gated alias move: it points an alias at a version only if that version is no
worse than the one the alias points at now (a tie moves it; an alias with no target is
simply set). The look and the move happen under an exclusive lock on the model's
aliases directory, so two gated moves of one alias cannot both pass on stale figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

from aae.atomic import file_lock
from aae.errors import AAEError, CheckpointNotFound
from aae.store import ALIASES_DIR, CheckpointStore, validate_name, validate_user_alias


class Metric(str, Enum):
    """A validation figure of a finished training run; lower is better for each."""

    VALIDATION_ERROR = "validation_error"  # classification or clustering error
    VALIDATION_LOSS = "validation_loss"  # reconstruction loss (every mode has one)


class MetricMissing(AAEError):
    """A version has no value for the metric asked for (e.g. an unsupervised model has
    no validation error)."""


class MetricWorse(AAEError):
    """A gated alias move refused: the new version is worse than the alias' target."""

    def __init__(self, message: str, fields: dict[str, Any]) -> None:
        super().__init__(message)
        self.fields = fields  # both figures, for the caller to show


def metric_value(metrics: dict[str, Any], metric: Metric | str) -> float | None:
    """``metric`` from a version's metrics (``metrics.json``); None if it has none. Older
    versions kept the validation loss only in the per-epoch history: read from there."""
    key = Metric(metric).value
    value = metrics.get(key)
    if value is None:
        history = metrics.get("history") or []
        value = history[-1].get(key) if history and isinstance(history[-1], dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return None
    return float(value)


@dataclass(frozen=True)
class Promotion:
    """The outcome of a gated move: where the alias points now, where it pointed, and
    the figures compared (None where not compared)."""

    alias: str
    version: int
    previous: int | None
    metric: str | None = None
    value: float | None = None
    previous_value: float | None = None

    @property
    def moved(self) -> bool:
        return self.previous != self.version


@contextmanager
def _alias_lock(store: CheckpointStore, name: str, version: int | str) -> Iterator[None]:
    """The model's alias lock, taken only for a version that exists (the store's
    CheckpointNotFound otherwise), so that an unknown model or version makes no lock
    file; the version is resolved again under the lock."""
    store.resolve(name, version)
    with file_lock(store.root / validate_name(name) / ALIASES_DIR / ".lock"):  # not an alias
        yield


def _value(store: CheckpointStore, name: str, version: int, metric: Metric) -> float:
    value = metric_value(store.info(name, version).metrics, metric)
    if value is None:
        raise MetricMissing(f"model {name!r} version {version} has no {metric.value} "
                            "(an unsupervised model has no validation error: gate it on "
                            "validation_loss)")
    return value


def promote(store: CheckpointStore, name: str, alias: str, version: int | str,
            unless_worse: Metric | str | None = None) -> Promotion:
    """Point ``alias`` of ``name`` at ``version``; with ``unless_worse``, only if the
    version's metric is no worse (no higher) than that of the alias' current target.
    Raises MetricWorse (the alias is left alone) or MetricMissing."""
    validate_user_alias(alias)  # before the lock: a refused alias makes no lock file
    with _alias_lock(store, name, version):
        number = store.resolve(name, version)
        previous = store.aliases(name).get(alias)
        if unless_worse is None:
            store.set_alias(name, alias, number)
            return Promotion(alias, number, previous)
        metric = Metric(unless_worse)
        value = _value(store, name, number, metric)
        if previous is None or previous == number:
            store.set_alias(name, alias, number)
            return Promotion(alias, number, previous, metric.value, value, None)
        try:
            previous_value = _value(store, name, previous, metric)
        except CheckpointNotFound:  # the target was deleted: nothing to be worse than
            previous_value = None
        if previous_value is not None and value > previous_value:
            fields = {"metric": metric.value, "version": number, "value": value,
                      "current_version": previous, "current_value": previous_value}
            raise MetricWorse(f"alias {alias!r} of {name!r} stays at version {previous}: "
                              f"version {number} has {metric.value} {value:.6g}, worse than "
                              f"{previous_value:.6g}", fields)
        store.set_alias(name, alias, number)
        return Promotion(alias, number, previous, metric.value, value, previous_value)
