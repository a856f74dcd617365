"""The job API against a real Redis server and a real worker process: submit, follow,
list, cancel; 503 while Redis is down (inference unaffected); the API key.

The module shares one Redis server and one worker on the queue "training". Tests whose
jobs must stay queued submit to a queue nobody works on."""

from __future__ import annotations

import io

import json
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
import torch
from fastapi.testclient import TestClient
from redis import Redis

from aae.checkpoints import publish_model
from aae.config import AAEConfig, Mode, Precision
from aae.data import load_splits
from aae.model import AdversarialAutoencoder
from aae.presets import PRESETS, build_config
from aae.store import CheckpointStore
from aae_jobs.contract import datasets_key
from cli.embedded_redis import EmbeddedRedis
from service.app import create_app
from service.settings import ServiceSettings
from tests.service.conftest import LOOPBACK

QUICK = {"epochs": 3, "hidden": 64, "validation_size": 300, "precision": "fp32"}
LONG = {**QUICK, "mode": "semi_supervised", "n_labels": 100, "epochs": 200,
        "batch_size": 20, "preset": "seed"}  # ~17,000 steps: cancelled long before
UNWORKED = "nobody-works-here"  # a queue without workers: its jobs stay queued
KEY = "s3cret"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    redis: EmbeddedRedis
    model_dir: Path
    store: CheckpointStore


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, make_workers: Callable[..., Any],
          wait_for: Callable[..., Any]) -> Iterator[Stack]:
    """Redis, a store holding an untrained model "base", and one worker, which has
    announced its datasets (only "mnist")."""
    model_dir = tmp_path_factory.mktemp("jobs") / "models"
    store = CheckpointStore(model_dir)
    torch.manual_seed(0)
    publish_model(store, "base", AdversarialAutoencoder(
        AAEConfig(mode=Mode.SUPERVISED, hidden=64, precision=Precision.FP32)), {})
    workers = make_workers()
    with EmbeddedRedis() as redis:
        workers.start(redis.url, model_dir)
        connection = Redis.from_url(redis.url)
        wait_for(lambda: connection.zcard(datasets_key("training")), timeout=60,
                 what="the worker's datasets")
        yield Stack(redis, model_dir, store)
        workers.stop_all()


@pytest.fixture
def make_client(stack: Stack) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**settings)``: a started app over the module's store and Redis."""
    threads = torch.get_num_threads()  # the lifespan sets torch's process-wide thread count
    with ExitStack() as clients:
        def make(**overrides: Any) -> TestClient:
            settings = {"model_dir": stack.model_dir, "redis_url": stack.redis.url,
                        "default_model": "base", "job_events_poll_s": 0.05, **overrides}
            return clients.enter_context(TestClient(create_app(ServiceSettings(**settings)),
                                                    client=LOOPBACK))
        yield make
    torch.set_num_threads(threads)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def dashboard_metrics() -> set[str]:
    """The aae_* series the Grafana dashboard's panels query."""
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "aae-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert exprs
    return {name for expr in exprs for name in re.findall(r"\baae_[a-z_]+", expr)}


def events(client: TestClient, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The server-sent events of a job, read until the stream ends."""
    out, kind = [], None
    with client.stream("GET", f"/jobs/{job_id}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[len("data: "):])))
    return out


def test_a_job_reports_progress_finishes_and_its_version_serves_samples(client, stack,
                                                                       problem, scrape):
    before = scrape(client)
    submitted = client.post("/jobs/train", json={"name": "sevens", "mode": "supervised",
                                                 **QUICK, "batch_size": 20})
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert submitted.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued" and job["model"] == "sevens"
    assert job["config"]["mode"] == "supervised" and job["config"]["epochs"] == 3
    assert job["dataset_checked"] is True  # against the worker's announcement

    stream = events(client, job["id"])
    kinds = [kind for kind, _ in stream]
    assert kinds[-1] == "end" and set(kinds[:-1]) == {"job"}
    steps = [e["progress"]["step"] for _, e in stream if e["progress"]]
    assert len(set(steps)) >= 2 and steps == sorted(steps)  # progress moved, forwards
    assert any(e["status"] == "started" and e["progress"] and e["progress"]["eta_s"] is not None
               for _, e in stream)
    final = stream[-1][1]
    assert final["status"] == "finished" and final["error"] is None
    assert final["result"] == {"model": "sevens", "version": 1}
    assert final["progress"]["step"] == final["progress"]["total_steps"] == 3 * (1700 // 20)
    assert set(final["progress"]["losses"]) == {"reconstruction", "discriminator", "generator"}
    assert final["ended_at"] and final["attempts"] == 1

    # a grid of samples at every epoch's end, named by the events, kept after the job
    named = {e["samples"] for _, e in stream if e["samples"]}
    assert len(named) >= 2 and final["samples"].endswith("latest.png?epoch=3")
    grid = client.get(final["samples"])
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(grid.content)).size == (10 * 28, 4 * 28)
    problem(client.get("/jobs/no-such-job/samples/latest.png"), 404)

    assert client.get(f"/jobs/{job['id']}").json() == final
    assert job["id"] in [j["id"] for j in client.get("/jobs", params={"status": "finished"}).json()]
    assert job["id"] not in [j["id"] for j in client.get("/jobs",
                                                         params={"status": "failed"}).json()]
    sample = client.get("/sample", params={"model": "sevens", "label": 7})
    assert sample.status_code == 200 and sample.headers["content-type"] == "image/png"
    assert sample.headers["x-model-version"] == "1"
    problem(client.post(f"/jobs/{job['id']}/cancel"), 409)  # it has ended

    # the worker's counters, read from Redis by the API's /metrics
    after = scrape(client)
    assert after.value("aae_job_queue_up") == 1 and after.value("aae_workers_alive") == 1
    assert after.value("aae_jobs_queued") == 0
    assert after.value("aae_jobs", status="finished") >= 1
    cpu = {"device": "cpu"}
    assert (after.value("aae_worker_jobs_total", outcome="finished", **cpu)
            - before.value("aae_worker_jobs_total", outcome="finished", **cpu)) == 1
    steps = (after.value("aae_training_step_seconds_count", **cpu)
             - before.value("aae_training_step_seconds_count", **cpu))
    seconds = (after.value("aae_training_step_seconds_sum", **cpu)
               - before.value("aae_training_step_seconds_sum", **cpu))
    assert 0 < steps <= 3 * (1700 // 20) and 0 < seconds / steps < 1
    # every step, the first ones of the run included, except the 5 of epoch 1 after its
    # last step report (step 80 of 85, AAE_PROGRESS_EVERY=10): its report follows validation
    assert steps == 3 * (1700 // 20) - 5


@pytest.mark.parametrize("body, field", [
    ({"epochs": 0}, "epochs"),
    ({"mode": "semi_supervised", "n_labels": 105}, "n_labels"),
    ({"mode": "unsupervised", "n_labels": 100}, "n_labels"),
    ({"mode": "adversarial"}, "mode"),
    ({"dropout_encoder": 1.5}, "dropout_encoder"),
    ({"name": "../escape"}, "name"),
    ({"dataset": "a/b"}, "dataset"),
    ({"learning_rate": 0.1}, "learning_rate"),
    ({"preset": "fastest"}, "preset"),
    ({"optimizer": "lbfgs"}, "optimizer"),
    ({"lr_milestones": [2, 2]}, "lr_milestones"),
    # typed as the JSON schema says: true is not 1, nor "3" a number, nor 1 a boolean
    ({"label_shift": False}, "label_shift"),
    ({"z_dim": "3"}, "z_dim"),
    ({"z_dim": 2.5}, "z_dim"),
    ({"vat_weight": True}, "vat_weight"),
    ({"encoder_batch_norm": 1}, "encoder_batch_norm"),
    ({"vat_dropout": "no"}, "vat_dropout"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"lr_milestones": [True]}, "lr_milestones"),
])
def test_invalid_parameters_are_refused_naming_the_field(client, problem, body, field):
    body = problem(client.post("/jobs/train", json=body), 422)
    assert [e["loc"][:2] for e in body["errors"]] == [["body", field]]  # [..., item] in a list
    assert field in body["detail"]


def test_the_schema_states_each_range_so_a_body_it_allows_is_accepted(make_client):
    client = make_client(queue="schema-ranges")  # no worker: queued only
    schema = client.get("/openapi.json").json()["components"]["schemas"]["TrainJobCreate"]
    fields = schema["properties"]
    assert fields["z_dim"]["minimum"] == 1 and fields["dropout_encoder"]["exclusiveMaximum"] == 1
    assert fields["lr_milestones"]["uniqueItems"] is True
    assert fields["n_labels"]["anyOf"][0]["multipleOf"] == 10
    # a whole float is a JSON Schema integer; the bounds themselves are accepted
    job = client.post("/jobs/train", json={"z_dim": 3.0, "dropout_encoder": 0.0, "epochs": 1,
                                           "label_shift": 8, "seed": 2**32 - 1})
    assert job.status_code == 202, job.text
    assert job.json()["config"]["z_dim"] == 3


def test_a_jobs_log_lines_carry_its_id_and_name_the_request_that_queued_it(
        make_client, make_workers, stack, tmp_path):
    """AAE_LOG_FORMAT=json in a real worker: every line the job logs (the worker's, the
    training loop's) carries the job's id, and its first names the request's."""
    client = make_client(queue="logged")
    job = client.post("/jobs/train", json=QUICK, headers={"X-Request-ID": "trace-7"})
    assert job.status_code == 202 and job.headers["X-Request-ID"] == "trace-7"
    job_id = job.json()["id"]
    log = tmp_path / "worker.log"
    workers = make_workers()
    worker = workers.start(stack.redis.url, stack.model_dir, queue="logged", burst=True,
                           log=log, AAE_LOG_FORMAT="json")
    assert worker.wait(120) == 0, log.read_text()[-2000:]
    assert client.get(f"/jobs/{job_id}").json()["status"] == "finished"
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # all JSON
    mine = [line for line in lines if line["request_id"] == job_id]
    assert {"worker.tasks", "aae.training"} <= {line["logger"] for line in mine}, lines
    assert f"job {job_id}: attempt 1" in mine[0]["message"]
    assert "queued by request trace-7" in mine[0]["message"]
    # the worker flushed subnormal floats before forking the job (aae.device)
    assert any("subnormals flushed" in line["message"] for line in mine
               if line["logger"] == "aae.training"), mine
    assert all(line["request_id"] == "-" for line in lines if line not in mine)  # RQ's own


def test_a_dataset_no_worker_has_is_refused_naming_the_field(client, problem):
    body = problem(client.post("/jobs/train", json={"dataset": "fashion", **QUICK}), 422)
    assert [e["loc"] for e in body["errors"]] == [["body", "dataset"]]
    assert "fashion" in body["detail"] and "mnist" in body["detail"]
    assert all(j["dataset"] != "fashion" for j in client.get("/jobs").json())


def test_while_no_worker_has_announced_datasets_jobs_are_queued_unchecked(make_client):
    client = make_client(queue="unannounced")  # no worker, so no datasets announced
    job = client.post("/jobs/train", json={"dataset": "fashion", **QUICK})
    assert job.status_code == 202, job.text
    assert job.json()["dataset"] == "fashion" and job.json()["dataset_checked"] is False
    assert client.post(f"/jobs/{job.json()['id']}/cancel").status_code == 200


def test_presets_fill_in_the_fields_a_job_leaves_out(make_client):
    client = make_client(queue="presets-unworked")  # its jobs stay queued
    listed = client.get("/presets").json()
    assert listed["default_preset"] == "default"
    assert set(listed["presets"]) == set(PRESETS)
    semi = {"mode": "semi_supervised", "n_labels": 100}
    default = client.post("/jobs/train", json=semi).json()["config"]
    assert default == build_config("default", **semi).to_dict()
    seed = client.post("/jobs/train", json={**semi, "preset": "seed"}).json()["config"]
    assert seed == AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=100).to_dict()
    paper = client.post("/jobs/train", json={**semi, "preset": "paper", "z_dim": 4,
                                             "lr_milestones": [7, 3]}).json()["config"]
    # milestones in any order (the JSON schema cannot say "increasing"), kept sorted
    assert (paper["optimizer"], paper["z_dim"], paper["lr_milestones"]) == ("sgd", 4, [3, 7])


def test_a_queued_job_is_canceled(make_client, problem):
    client = make_client(queue=UNWORKED)
    job = client.post("/jobs/train", json=QUICK).json()
    assert job["model"] == "mnist-unsupervised"  # the default name: <dataset>-<mode>
    assert [j["id"] for j in client.get("/jobs", params={"status": "queued"}).json()] == [job["id"]]
    canceled = client.post(f"/jobs/{job['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert client.get(f"/jobs/{job['id']}").json()["status"] == "canceled"
    assert client.get("/jobs", params={"status": "queued"}).json() == []
    assert [j["id"] for j in client.get("/jobs", params={"status": "canceled"}).json()] == [
        job["id"]]
    problem(client.post(f"/jobs/{job['id']}/cancel"), 409)
    problem(client.get("/jobs/no-such-job"), 404)
    problem(client.post("/jobs/no-such-job/cancel"), 404)


def test_a_running_job_stops_at_a_step_and_publishes_nothing(client, stack, wait_for,
                                                             scrape):
    job = client.post("/jobs/train", json={"name": "never", **LONG}).json()
    wait_for(lambda: (client.get(f"/jobs/{job['id']}").json()["progress"] or {}).get(
        "validation_error") is not None, timeout=120, what="the job's first epoch")
    assert client.get(f"/jobs/{job['id']}").json()["status"] == "started"
    for _ in range(2):  # some inference too, for the dashboard's panels
        assert client.get("/sample", params={"label": 3}).status_code == 200
    running = scrape(client)  # its progress, read from Redis at scrape time
    exposed = {name for name, _ in running}
    assert dashboard_metrics() <= exposed, dashboard_metrics() - exposed
    ours = {"job_id": job["id"], "model": "never"}
    assert running.value("aae_jobs", status="started") == 1
    assert running.value("aae_job_step", **ours) >= 10
    assert running.value("aae_job_total_steps", **ours) == 200 * (1700 // 20)
    assert running.value("aae_job_epochs", **ours) == 200
    assert running.value("aae_job_epoch", **ours) >= 1
    assert 0 < running.value("aae_job_validation_error", **ours) < 1
    assert {dict(labels)["phase"] for labels in running.samples("aae_job_loss")
            if dict(labels)["job_id"] == job["id"]} == {"reconstruction", "discriminator",
                                                         "generator", "classification"}

    asked = client.post(f"/jobs/{job['id']}/cancel")
    assert asked.status_code == 202, asked.text
    assert asked.json()["cancel_requested"] is True

    stopped = events(client, job["id"])[-1][1]
    assert stopped["status"] == "stopped" and stopped["result"] is None
    assert stopped["cancel_requested"] is True and stopped["stage"] == "stopped"
    assert stopped["error"] is None and stopped["ended_at"]
    assert stopped["progress"]["step"] < stopped["progress"]["total_steps"]
    assert "never" not in stack.store.models()
    assert not (stack.model_dir / ".jobs" / job["id"]).exists()
    listed = client.get("/jobs", params={"status": "stopped"}).json()
    assert [j["id"] for j in listed] == [job["id"]]
    ended = scrape(client)
    assert ended.value("aae_worker_jobs_total", outcome="stopped", device="cpu") == 1
    assert ended.value("aae_jobs", status="stopped") == 1
    assert ended.value("aae_jobs", status="failed") == 0  # RQ keeps both in one registry
    assert not ended.samples("aae_job_step")  # no job is running


@pytest.fixture(scope="module")
def digit_pixels(fixture_data_dir: Path) -> list[float]:
    splits = load_splits(fixture_data_dir, n_labels=None, validation_size=0, seed=0,
                         download=False)
    return splits.test.images[0].tolist()


def test_job_routes_answer_503_while_redis_is_down_and_inference_still_serves(
        make_client, problem, digit_pixels, scrape):
    with EmbeddedRedis() as redis:
        client = make_client(redis_url=redis.url)
        assert client.get("/jobs").status_code == 200
    # Redis is gone
    for response in (client.get("/jobs"), client.get("/jobs/some-id"),
                     client.post("/jobs/train", json=QUICK),
                     client.post("/jobs/some-id/cancel"), client.get("/jobs/some-id/events")):
        body = problem(response, 503)
        assert body["title"] == "Job queue unavailable" and "Redis" in body["detail"]
    encoded = client.post("/encode", json={"pixels": digit_pixels})
    assert encoded.status_code == 200 and len(encoded.json()["z"][0]) == 2
    assert client.get("/sample", params={"label": 7}).status_code == 200
    assert client.get("/models/base").status_code == 200
    assert scrape(client).value("aae_job_queue_up") == 0  # and the scrape still works


@pytest.mark.parametrize("api_key", [None, KEY])
def test_the_api_key_guards_changes_and_leaves_inference_open(make_client, stack, problem,
                                                              api_key, digit_pixels):
    client = make_client(queue=UNWORKED, api_key=api_key)
    torch.manual_seed(0)
    spare = publish_model(stack.store, "base", AdversarialAutoencoder(
        AAEConfig(mode=Mode.SUPERVISED, hidden=64, precision=Precision.FP32)), {})
    good = {"Authorization": f"Bearer {KEY}"}
    queued = client.post("/jobs/train", json=QUICK, headers=good).json()["id"]
    changes = [
        lambda h: client.post("/jobs/train", json=QUICK, headers=h),
        lambda h: client.post(f"/jobs/{queued}/cancel", headers=h),
        lambda h: client.put("/models/base/aliases/production", json={"version": 1},
                             headers=h),
        lambda h: client.delete(f"/models/base/versions/{spare}", headers=h),
    ]
    for change in changes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            response = change(headers)
            if api_key is None:
                assert response.status_code < 300, response.text
                break
            problem(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
        else:
            assert change(good).status_code < 300
    for read in (client.get("/jobs"), client.get(f"/jobs/{queued}"), client.get("/models"),
                 client.get("/sample", params={"label": 3}),
                 client.post("/encode", json={"pixels": digit_pixels})):
        assert read.status_code == 200, read.text


def test_error_documents_show_no_internal_address(make_client, problem, stack):
    """A 503 names the job queue, never Redis' address or socket path; readiness never
    prints the store's path."""
    client = make_client(redis_url="unix:///tmp/no-such-dir/redis.sock")
    body = problem(client.get("/jobs"), 503)
    assert "no-such-dir" not in body["detail"] and "redis.sock" not in body["detail"]
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and str(stack.model_dir) not in ready["detail"]
