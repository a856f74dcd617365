"""``GET /metrics``: HTTP and inference metrics move with real requests, parsed with
prometheus-client's own parser; two uvicorn worker processes report one total.

In one process the metrics are process-wide (as Prometheus counters are), so the
in-process tests compare a scrape before with one after. The job and worker metrics
are tested with a real worker in test_jobs.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.service.conftest import parse_metrics

ROOT = Path(__file__).resolve().parents[2]


def test_requests_are_counted_by_route_template_method_and_status(client, scrape,
                                                                  image_files):
    before = scrape(client)
    for i in range(3):
        assert client.post("/classify", files={"file": image_files.png(i)}).status_code == 200
    assert client.get("/models/no-such-model").status_code == 404
    assert client.get("/no/such/path").status_code == 404
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved("aae_http_requests_total", route="/classify", method="POST",
                 status="200") == 3
    assert moved("aae_http_requests_total", route="/models/{name}", method="GET",
                 status="404") == 1  # the template, not /models/no-such-model
    assert moved("aae_http_requests_total", route="<unmatched>", method="GET",
                 status="404") == 1
    assert moved("aae_http_request_duration_seconds_count", route="/classify",
                 method="POST") == 3
    assert moved("aae_http_request_duration_seconds_sum", route="/classify",
                 method="POST") > 0
    assert moved("aae_http_request_duration_seconds_bucket", route="/classify",
                 method="POST", le="+Inf") == 3
    assert after.value("aae_http_requests_in_progress", method="POST") == 0
    # /metrics itself is not counted
    assert not any(dict(labels).get("route") == "/metrics"
                   for labels in after.samples("aae_http_requests_total"))


def test_inference_metrics_follow_loads_batches_and_the_cache(client, scrape, image_files):
    before = scrape(client)
    three = [("file", image_files.png(i)) for i in range(3)]
    assert client.post("/classify", files=three).status_code == 200  # loads digits v2
    assert client.post("/classify", files=three[:1]).status_code == 200
    assert client.get("/sample", params={"label": 7, "n": 5, "version": 1}).status_code == 200
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    v2 = {"model": "digits", "version": "2"}  # operation: the pass (classify encodes)
    assert moved("aae_model_cache_misses_total", **v2) == 1
    assert moved("aae_model_cache_hits_total", **v2) == 1
    assert moved("aae_model_load_seconds_count", **v2) == 1
    assert moved("aae_model_load_seconds_sum", **v2) > 0
    assert after.value("aae_models_loaded", **v2) == 1
    assert after.value("aae_models_loaded", model="digits", version="1") == 1
    assert moved("aae_inference_batch_size_count", **v2, operation="encode") == 2
    assert moved("aae_inference_batch_size_sum", **v2, operation="encode") == 4
    assert moved("aae_inference_batch_size_bucket", **v2, operation="encode", le="1.0") == 1
    assert moved("aae_inference_forward_seconds_count", **v2, operation="encode") == 2
    assert moved("aae_inference_batch_size_sum", model="digits", version="1",
                 operation="decode") == 5


def test_an_unloaded_model_is_no_longer_counted_as_loaded(make_client, scrape, image_files):
    client = make_client(model_cache_size=1)
    assert client.post("/classify", files={"file": image_files.png()}).status_code == 200
    assert scrape(client).value("aae_models_loaded", model="digits", version="2") == 1
    assert client.get("/sample", params={"model": "plain"}).status_code == 200
    after = scrape(client)
    assert after.value("aae_models_loaded", model="digits", version="2") == 0
    assert after.value("aae_models_loaded", model="plain", version="1") == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_uvicorn_worker_processes_report_one_total(model_dir, tmp_path, wait_for,
                                                       image_files):
    """``aae serve --workers 2``: requests land on both processes; every scrape, whichever
    process answers it, reports the same total."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # of an earlier run: wiped
    port = free_port()
    env = {**os.environ, "AAE_MODEL_DIR": str(model_dir), "AAE_DEFAULT_MODEL": "digits",
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "AAE_REDIS_URL": "redis://127.0.0.1:1"}
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--workers", "2",
                               "--port", str(port)], cwd=ROOT, env=env,
                              start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert server.poll() is None, "aae serve exited"
            try:
                return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(ready, timeout=120, what="the API", interval=0.2)

        def pids() -> set[str]:  # processes that have recorded requests
            return {p.stem.rsplit("_", 1)[1] for p in metrics_dir.glob("histogram_*.db")}

        sent = 0
        png = image_files.png()
        while len(pids()) < 2 and sent < 400:
            for _ in range(10):  # a new connection each: the kernel spreads them
                response = httpx.post(f"{base}/classify", files={"file": png}, timeout=30)
                assert response.status_code == 200
                sent += 1
        assert len(pids()) == 2, "one process took every connection"
        assert not (metrics_dir / "counter_999999.db").exists()

        for _ in range(8):  # each on a new connection, answered by either process
            scrape = parse_metrics(httpx.get(f"{base}/metrics", timeout=30).text)
            assert scrape.value("aae_http_requests_total", route="/classify", method="POST",
                                status="200") == sent
            assert scrape.value("aae_http_request_duration_seconds_count", route="/classify",
                                method="POST") == sent
            assert scrape.value("aae_inference_batch_size_sum", model="digits", version="2",
                                operation="encode") == sent
            assert scrape.value("aae_models_loaded", model="digits", version="2") == 2
            assert scrape.value("aae_job_queue_up") == 0  # no Redis: still a good scrape
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    # each process marked itself dead on the way out: its live gauges are gone, its
    # counters and histograms stay (they are totals)
    assert not list(metrics_dir.glob("gauge_live*.db"))
    assert len(list(metrics_dir.glob("counter_*.db"))) == 2
