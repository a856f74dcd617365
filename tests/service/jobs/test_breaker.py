"""A hung Redis (the real server, SIGSTOPped) against the API served by uvicorn over real
HTTP: every route answers within a second, the job routes a 503 with Retry-After (short
socket timeouts, then the open breaker), the model and inference routes as usual even
with sixty job requests in flight (the job routes run on threads of their own); once
Redis answers again, so do the job routes."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from redis.exceptions import TimeoutError as RedisTimeoutError

from aae.checkpoints import publish_model
from aae.config import AAEConfig, Mode, Precision
from aae.model import AdversarialAutoencoder
from aae.store import CheckpointStore
from service.core.errors import PROBLEM, QueueUnavailable
from service.jobs.breaker import Breaker
from tests.service.live import LiveServer

QUICK = {"epochs": 1, "hidden": 64, "validation_size": 300, "precision": "fp32"}


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    model_dir = tmp_path / "models"
    torch.manual_seed(0)
    publish_model(CheckpointStore(model_dir), "base", AdversarialAutoencoder(
        AAEConfig(mode=Mode.SUPERVISED, hidden=64, precision=Precision.FP32)), {})
    return model_dir


def timed(client: httpx.Client, method: str, url: str, **kwargs: Any
          ) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = client.request(method, url, **kwargs)
    return response, time.perf_counter() - start


def test_a_hung_redis_gets_fast_503s_and_never_holds_the_model_routes(
        model_dir: Path, redis_server, paused: Callable[..., Any]):
    settings = {"redis_url": redis_server.url, "default_model": "base",
                "queue": "nobody-works-here", "redis_breaker_s": 3.0}
    with LiveServer(model_dir, **settings) as live, httpx.Client(
            base_url=live.base_url, timeout=30,
            limits=httpx.Limits(max_connections=100)) as client:
        submitted = client.post("/jobs/train", json=QUICK)
        assert submitted.status_code == 202, submitted.text
        job = f"/jobs/{submitted.json()['id']}"
        with paused(redis_server.process), ThreadPoolExecutor(80) as pool:
            waiting = [pool.submit(timed, client, "GET", job) for _ in range(60)]
            others = {(method, url): pool.submit(timed, client, method, url, **kwargs)
                      for method, url, kwargs in [
                          ("GET", "/models/base", {}),
                          ("PUT", "/models/base/aliases/production", {"json": {"version": 1}}),
                          ("GET", "/sample?label=7", {}),
                          ("GET", "/healthz", {}),
                          ("GET", "/metrics", {}),
                          ("GET", "/jobs", {}),
                          ("POST", "/jobs/train", {"json": QUICK}),
                          ("POST", f"{job}/cancel", {}),
                          ("GET", "/sweeps", {})]}
            answers = [f.result() for f in waiting] + [f.result() for f in others.values()]
            by_route = {key: f.result() for key, f in others.items()}
            slowest = max(took for _, took in answers)
            assert slowest < 1.0, f"the slowest answer took {slowest:.2f} s"
            for response, _ in [*(f.result() for f in waiting), by_route["GET", "/jobs"],
                                by_route["POST", "/jobs/train"],
                                by_route["POST", f"{job}/cancel"], by_route["GET", "/sweeps"]]:
                assert response.status_code == 503, response.text
                assert response.headers["content-type"] == PROBLEM
                assert response.json()["title"] == "Job queue unavailable"
                assert 1 <= int(response.headers["retry-after"]) <= 3
            for route in [("GET", "/models/base"), ("PUT", "/models/base/aliases/production"),
                          ("GET", "/sample?label=7"), ("GET", "/healthz"), ("GET", "/metrics")]:
                assert by_route[route][0].status_code == 200, (route, by_route[route][0].text)
            assert "aae_job_queue_up 0.0" in by_route["GET", "/metrics"][0].text
            assert client.get("/models/base").json()["aliases"]["production"] == 1
            time.sleep(1.0)  # still hung: a later request is refused as fast
            response, took = timed(client, "GET", job)
            assert response.status_code == 503 and took < 0.5

        # Redis answers again: once the breaker lets a call through, the job routes work
        deadline = time.monotonic() + 10
        while (answer := client.get(job)).status_code == 503:
            assert time.monotonic() < deadline, answer.text
            time.sleep(float(answer.headers["retry-after"]) / 4)
        assert answer.status_code == 200 and answer.json()["status"] == "queued"
        assert client.get("/jobs").status_code == 200


def test_the_breaker_opens_on_an_unreachable_redis_and_lets_one_call_find_out():
    now = [100.0]
    breaker = Breaker(open_s=5.0, clock=lambda: now[0])
    with pytest.raises(QueueUnavailable):
        with breaker.guard():
            raise RedisTimeoutError("Timeout reading from socket")
    assert breaker.is_open and breaker.retry_after_s() == 5
    with pytest.raises(QueueUnavailable):  # refused without calling
        breaker.admit()
    now[0] += 5.0  # half-open: one call finds out, the others are still refused
    breaker.admit()
    with pytest.raises(QueueUnavailable):
        breaker.admit()
    breaker.succeeded()
    breaker.admit()  # closed
    with pytest.raises(KeyError):  # Redis answered: an error of the call, not of Redis
        with breaker.guard():
            raise KeyError("x")
    assert not breaker.is_open
