"""Comparing versions by a validation metric, and the gated alias move (``aae.selection``)."""

from __future__ import annotations

import threading

import pytest
import torch

from aae.checkpoints import publish_model
from aae.config import AAEConfig, Mode, Precision
from aae.model import AdversarialAutoencoder
from aae.selection import Metric, MetricMissing, MetricWorse, metric_value, promote
from aae.store import CheckpointStore


def _publish(store: CheckpointStore, **metrics) -> int:
    torch.manual_seed(0)
    model = AdversarialAutoencoder(AAEConfig(mode=Mode.SEMI_SUPERVISED, hidden=8,
                                             precision=Precision.FP32))
    return publish_model(store, "m", model, metrics)


def test_metrics_are_read_from_the_version_or_its_last_epoch():
    assert metric_value({"validation_error": 0.1}, Metric.VALIDATION_ERROR) == 0.1
    assert metric_value({"history": [{"validation_loss": 0.3}, {"validation_loss": 0.2}]},
                        "validation_loss") == 0.2
    assert metric_value({"validation_error": None}, "validation_error") is None
    assert metric_value({"validation_error": float("nan")}, "validation_error") is None
    assert metric_value({}, "validation_loss") is None


def test_a_gated_move_sets_an_unset_alias_moves_on_a_tie_and_refuses_worse(tmp_path):
    store = CheckpointStore(tmp_path)
    a = _publish(store, validation_error=0.05)
    worse = _publish(store, validation_error=0.06)
    tie = _publish(store, validation_error=0.05)
    done = promote(store, "m", "production", a, "validation_error")
    assert (done.version, done.previous, done.moved) == (a, None, True)
    with pytest.raises(MetricWorse) as refused:
        promote(store, "m", "production", worse, "validation_error")
    assert refused.value.fields == {"metric": "validation_error", "version": worse,
                                    "value": 0.06, "current_version": a,
                                    "current_value": 0.05}
    assert store.aliases("m")["production"] == a
    assert promote(store, "m", "production", tie, "validation_error").version == tie
    assert promote(store, "m", "production", worse).version == worse  # ungated


def test_a_version_without_the_metric_is_refused(tmp_path):
    store = CheckpointStore(tmp_path)
    a = _publish(store, validation_error=0.05)
    none = _publish(store)
    promote(store, "m", "production", a)
    with pytest.raises(MetricMissing):
        promote(store, "m", "production", none, "validation_error")
    assert store.aliases("m")["production"] == a


def test_concurrent_gated_moves_never_both_pass_on_stale_figures(tmp_path):
    store = CheckpointStore(tmp_path)
    base = _publish(store, validation_error=0.5)
    promote(store, "m", "production", base)
    candidates = [_publish(store, validation_error=e) for e in (0.4, 0.3, 0.2, 0.1, 0.45)]
    barrier = threading.Barrier(len(candidates))

    def move(version: int) -> None:
        barrier.wait()
        try:
            promote(store, "m", "production", version, "validation_error")
        except MetricWorse:
            pass

    threads = [threading.Thread(target=move, args=(v,)) for v in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # whatever the order, a gated alias only ever improves: it ends at the best
    assert store.aliases("m")["production"] == candidates[3]
