"""Submissions that are safe to retry, against a real Redis (and, where a job must run or
must not, a real worker): the same Idempotency-Key and body return the first request's
job or sweep; another body with the key is a 422; a submission answered 503 while Redis
hung is refused for good, even though its enqueue reached Redis when it resumed, and its
key makes a new job."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from aae.store import CheckpointStore
from aae_jobs.queueing import enqueue
from aae_jobs.records import read_record
from service.app import create_app
from service.settings import ServiceSettings
from tests.service.conftest import LOOPBACK

QUICK = {"epochs": 1, "hidden": 64, "validation_size": 300, "precision": "fp32",
         "batch_size": 50, "name": "retried"}
UNWORKED = "nobody-works-here"


@pytest.fixture
def make_client(tmp_path: Path, redis_server) -> Iterator[Callable[..., TestClient]]:
    threads = torch.get_num_threads()
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = {"model_dir": tmp_path / "models", "redis_url": redis_server.url,
                    "queue": UNWORKED, **overrides}
        client = TestClient(create_app(ServiceSettings(**settings)), client=LOOPBACK)
        clients.append(client.__enter__())
        return client
    yield make
    for client in clients:
        client.__exit__(None, None, None)
    torch.set_num_threads(threads)


@pytest.mark.parametrize("route, body, other", [
    ("/jobs/train", QUICK, {**QUICK, "epochs": 2}),
    ("/sweeps", {"base": QUICK, "grid": {"seed": [1, 2]}},
     {"base": QUICK, "grid": {"seed": [1, 3]}}),
])
def test_the_same_key_and_body_return_the_first_submission(make_client, problem, route, body,
                                                           other):
    client = make_client()
    first = client.post(route, json=body, headers={"Idempotency-Key": "order-17"})
    assert first.status_code == 202, first.text
    again = client.post(route, json=body, headers={"Idempotency-Key": "order-17"})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    refused = problem(client.post(route, json=other, headers={"Idempotency-Key": "order-17"}),
                      422)
    assert refused["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert first.json()["id"] in refused["detail"]
    # another key, or none: another submission
    for headers in ({"Idempotency-Key": "order-18"}, {}):
        other_job = client.post(route, json=body, headers=headers)
        assert other_job.status_code == 202 and other_job.json()["id"] != first.json()["id"]
    listed = client.get(route.removesuffix("/train") if route == "/jobs/train" else route)
    ids = [j["id"] for j in listed.json()]
    assert ids.count(first.json()["id"]) == 1


def test_a_submission_answered_503_never_runs_and_its_key_makes_a_new_job(
        make_client, problem, redis_server, workers, wait_for, tmp_path):
    """Redis holds every write past the API's 0.5 s timeout (``CLIENT PAUSE ... WRITE``:
    reads still answer, so the submission gets as far as its enqueue). A SIGSTOPped
    Redis runs such an enqueue when it resumes (issue 29); a paused one drops it with the
    client, so the late enqueue is made here, as the API made it (``enqueue``)."""
    client = make_client(queue="training", redis_breaker_s=0.5)
    connection = Redis.from_url(redis_server.url)
    headers = {"Idempotency-Key": "order-19"}
    connection.client_pause(1500, all=False)
    problem(client.post("/jobs/train", json=QUICK, headers=headers), 503)
    (refused_id,) = [p.stem for p in (tmp_path / "models" / ".queue").glob("*.json")]
    record = read_record(tmp_path / "models", refused_id)
    assert record.refused and not record.started
    enqueue(Queue("training", connection=connection, serializer=JSONSerializer), record)
    wait_for(lambda: client.get("/jobs").status_code == 200, timeout=5, what="the breaker")

    retried = client.post("/jobs/train", json=QUICK, headers=headers)  # the key is free
    assert retried.status_code == 202, retried.text
    assert retried.json()["id"] != refused_id
    workers.start(redis_server.url, tmp_path / "models", burst=True).wait(timeout=120)

    refused = client.get(f"/jobs/{refused_id}").json()
    assert refused["status"] == "failed" and "refused" in refused["error"]
    assert refused["attempts"] == 0 and refused["stage"] is None  # it never started
    done = client.get(f"/jobs/{retried.json()['id']}").json()
    assert done["status"] == "finished", done
    assert CheckpointStore(tmp_path / "models").versions("retried") == [1]  # one version
    assert client.post("/jobs/train", json=QUICK,
                       headers=headers).json()["id"] == retried.json()["id"]
    assert Job.fetch(refused_id, connection=connection,
                     serializer=JSONSerializer).meta.get("attempts") is None
