"""Prometheus metrics of the API's HTTP traffic, and the exposition of all its metrics.

Named by Prometheus conventions (``_total`` counters, ``_seconds`` units) under the
``aae_`` prefix. With ``PROMETHEUS_MULTIPROC_DIR`` set (several uvicorn worker
processes), every process writes its values to files there and ``/metrics`` sums them
with prometheus-client's ``MultiProcessCollector``; ``aae serve`` empties that directory
before the workers start, and each worker marks itself dead when it stops. Job and
worker metrics are read from Redis at scrape time (``service.jobs.metrics``); the
inference metrics are ``service.inference.metrics``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter,
                               Gauge, Histogram, generate_latest, multiprocess)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)

HTTP_REQUESTS = Counter("aae_http_requests_total", "HTTP requests, by route template, "
                        "method and status code", ["route", "method", "status"])
HTTP_LATENCY = Histogram("aae_http_request_duration_seconds", "Time to answer a request, "
                         "by route template and method", ["route", "method"],
                         buckets=LATENCY_BUCKETS)
HTTP_IN_PROGRESS = Gauge("aae_http_requests_in_progress", "Requests being answered now",
                         ["method"], multiprocess_mode="livesum")


class HTTPMetrics:
    """ASGI middleware counting requests and their latency by route template (``/models/
    {name}``, not the raw path, so that the label set stays bounded)."""

    def __init__(self, app: ASGIApp, skip: tuple[str, ...] = ("/metrics",)) -> None:
        self.app, self.skip = app, skip
        # the labelled children, looked up once: ``labels()`` costs microseconds a call
        self._in_progress: dict[str, Any] = {}
        self._done: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _children(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        key = (route, method, status)
        children = self._done.get(key)
        if children is None:
            children = self._done[key] = (HTTP_REQUESTS.labels(route, method, str(status)),
                                          HTTP_LATENCY.labels(route, method))
        return children

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.skip:
            await self.app(scope, receive, send)
            return
        method, status, start = scope["method"], 500, time.perf_counter()
        in_progress = self._in_progress.get(method)
        if in_progress is None:
            in_progress = self._in_progress[method] = HTTP_IN_PROGRESS.labels(method)
        in_progress.inc()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            in_progress.dec()
            route = getattr(scope.get("route"), "path", None) or (
                scope["path"] if "endpoint" in scope else "<unmatched>")  # /docs, /redoc
            requests, latency = self._children(route, method, status)
            requests.inc()
            latency.observe(time.perf_counter() - start)


def prepare_multiprocess_dir() -> None:
    """Empty the multiprocess directory before worker processes start (stale files of an
    earlier run would otherwise be summed in)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        Path(directory).mkdir(parents=True, exist_ok=True)


def mark_process_dead() -> None:
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())


def exposition(extra: tuple[Collector, ...] = ()) -> tuple[bytes, str]:
    """The Prometheus text exposition of this process, or of all processes in
    multiprocess mode, followed by ``extra`` collectors (read at scrape time)."""
    if os.environ.get(MULTIPROC_ENV):
        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes)
        body = generate_latest(processes)
    else:
        body = generate_latest(REGISTRY)
    if extra:
        scraped = CollectorRegistry(auto_describe=False)
        for collector in extra:
            scraped.register(collector)
        body += generate_latest(scraped)
    return body, CONTENT_TYPE_LATEST
