"""Prometheus metrics of inference: forward passes, the model cache, the queues and
the requests admission control sheds (``aae_`` prefix, Prometheus conventions, as in
``service.core.metrics``, which exposes them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

from service.core.metrics import LATENCY_BUCKETS

if TYPE_CHECKING:  # annotations only: the batcher imports this module (SHED_REQUESTS)
    from service.inference.batching import PassReport
    from service.inference.registry import LoadedModel

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

BATCH_SIZE = Histogram("aae_inference_batch_size", "Images (or codes) per forward pass",
                       ["model", "version", "operation"], buckets=BATCH_BUCKETS)
FORWARD_SECONDS = Histogram("aae_inference_forward_seconds", "Time of one forward pass",
                            ["model", "version", "operation"], buckets=LATENCY_BUCKETS)
MODEL_LOAD_SECONDS = Histogram("aae_model_load_seconds", "Time to load a model version "
                               "from the checkpoint store", ["model", "version"],
                               buckets=LATENCY_BUCKETS)
CACHE_HITS = Counter("aae_model_cache_hits_total", "Requests whose model was already "
                     "loaded", ["model", "version"])
CACHE_MISSES = Counter("aae_model_cache_misses_total", "Requests that had to load their "
                       "model (or wait for its load)", ["model", "version"])
QUEUE_DEPTH = Gauge("aae_inference_queue_depth", "Requests waiting for a forward pass or "
                    "an encoder thread, by model and stage", ["model", "stage"],
                    multiprocess_mode="livesum")
SHED_REQUESTS = Counter("aae_requests_shed_total", "Requests answered 503 by admission "
                        "control, never computed: queue_full or deadline", ["reason"])
DAMAGED_VERSIONS = Gauge("aae_model_version_damaged", "Versions found damaged when loaded "
                         "(a file differs from the version's manifest): 1 until one loads "
                         "whole again or is deleted", ["model", "version"],
                         multiprocess_mode="livemax")
MODELS_LOADED = Gauge("aae_models_loaded", "Model versions held in memory (1 while loaded)",
                      ["model", "version"], multiprocess_mode="livesum")


class InferenceMetrics:
    """The model registry's observer: records loads, cache use and forward passes."""

    def cache(self, name: str, version: int, hit: bool) -> None:
        (CACHE_HITS if hit else CACHE_MISSES).labels(name, str(version)).inc()

    def loaded(self, loaded: LoadedModel, seconds: float) -> None:
        version = str(loaded.version)
        MODEL_LOAD_SECONDS.labels(loaded.name, version).observe(seconds)
        MODELS_LOADED.labels(loaded.name, version).set(1)

    def unloaded(self, name: str, version: int) -> None:
        MODELS_LOADED.labels(name, str(version)).set(0)

    def damaged(self, name: str, version: int, damaged: bool) -> None:
        DAMAGED_VERSIONS.labels(name, str(version)).set(1 if damaged else 0)

    def batch(self, name: str, version: int, operation: str, report: PassReport) -> None:
        labels = (name, str(version), operation)
        BATCH_SIZE.labels(*labels).observe(report.rows)
        FORWARD_SECONDS.labels(*labels).observe(report.compute_s)

    def queue(self, name: str, stage: str) -> Any:
        """The queue-depth gauge of a model's stage (the batcher moves it up and down)."""
        return QUEUE_DEPTH.labels(name, stage)
