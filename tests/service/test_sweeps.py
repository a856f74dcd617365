"""Sweeps through a real API (uvicorn on a port), a real Redis and two real workers: a
2 x 2 grid on the committed digits publishes 4 versions, ranked by validation error,
aggregated over seeds and promoted once; a bad point is refused before anything is
queued; cancel stops the rest; metric-gated alias moves."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import torch
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from aae.checkpoints import publish_model
from aae.config import AAEConfig, Mode, Precision
from aae.model import AdversarialAutoencoder
from aae.store import CheckpointStore
from aae_jobs.contract import datasets_key
from aae_jobs.records import job_records
from aae_jobs.sweeps import read_sweep, sweep_records
from cli.embedded_redis import EmbeddedRedis
from cli.main import main as aae
from tests.service.live import LiveServer

QUICK = {"mode": "semi_supervised", "n_labels": 100, "epochs": 2, "hidden": 64,
         "validation_size": 300, "precision": "fp32", "preset": "seed"}
LONG = {**QUICK, "epochs": 200, "batch_size": 20}  # minutes: canceled long before


@dataclass
class Stack:
    redis: EmbeddedRedis
    model_dir: Path
    store: CheckpointStore
    live: LiveServer
    client: httpx.Client


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, make_workers: Callable[..., Any],
          wait_for: Callable[..., Any]) -> Iterator[Stack]:
    model_dir = tmp_path_factory.mktemp("sweeps") / "models"
    store = CheckpointStore(model_dir)
    workers = make_workers()
    with EmbeddedRedis() as redis:
        for _ in range(2):
            workers.start(redis.url, model_dir)
        connection = Redis.from_url(redis.url)
        wait_for(lambda: connection.zcard(datasets_key("training")), timeout=60,
                 what="the workers' datasets")
        with LiveServer(model_dir, redis_url=redis.url, job_events_poll_s=0.05) as live, \
                httpx.Client(base_url=live.base_url, timeout=30) as client:
            yield Stack(redis, model_dir, store, live, client)
        workers.stop_all()


def _ended(stack: Stack, sweep_id: str, wait_for: Callable[..., Any],
           timeout: float = 180) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        sweep = stack.client.get(f"/sweeps/{sweep_id}").json()
        return sweep if sweep["status"] == "ended" and sweep["settled"] else None
    return wait_for(settled, timeout=timeout, what=f"sweep {sweep_id} to settle")


def test_a_grid_trains_every_point_ranks_them_aggregates_seeds_and_promotes_once(
        stack: Stack, wait_for: Callable[..., Any]) -> None:
    r = stack.client.post("/sweeps", json={
        "base": {**QUICK, "name": "grid"}, "grid": {"z_dim": [2, 4], "seed": [1, 2]},
        "promote": "production"})
    assert r.status_code == 202, r.text
    sweep = r.json()
    assert r.headers["location"] == f"/sweeps/{sweep['id']}"
    assert sorted(p["index"] for p in sweep["points"]) == [0, 1, 2, 3]
    jobs = {p["job"] for p in sweep["points"]}
    for job in jobs:  # ordinary jobs, tagged with the sweep
        assert stack.client.get(f"/jobs/{job}").json()["sweep"] == sweep["id"]

    sweep = _ended(stack, sweep["id"], wait_for)
    points = sweep["points"]
    assert [p["status"] for p in points] == ["finished"] * 4
    assert sorted(p["version"] for p in points) == [1, 2, 3, 4]
    assert stack.store.versions("grid") == [1, 2, 3, 4]
    errors = [p["validation_error"] for p in points]
    assert errors == sorted(errors)  # best first, by the validation split
    for p in points:  # each figure is its version's
        metrics = stack.store.info("grid", p["version"]).metrics
        assert p["validation_error"] == metrics["validation_error"]
        assert p["test_error"] == metrics["test_error"]
        assert p["seconds"] == metrics["train_seconds"] > 0
        assert metrics["seed"] == p["overrides"]["seed"]
        assert stack.store.info("grid", p["version"]).config["z_dim"] == p["overrides"]["z_dim"]
    groups = {g["overrides"]["z_dim"]: g for g in sweep["seeds"]}
    assert set(groups) == {2, 4}
    for z_dim, group in groups.items():
        values = [p["validation_error"] for p in points if p["overrides"]["z_dim"] == z_dim]
        assert group["seeds"] == [1, 2] and group["validation_error"]["n"] == 2
        assert group["validation_error"]["mean"] == pytest.approx(sum(values) / 2)
        assert group["validation_error"]["std"] == pytest.approx(
            abs(values[0] - values[1]) / 2 ** 0.5)
    # the best point became production, once, by a worker
    assert sweep["promotion"]["state"] == "promoted"
    assert sweep["promotion"]["version"] == points[0]["version"]
    assert stack.store.aliases("grid")["production"] == points[0]["version"]
    assert sweep["counts"] == {"finished": 4}
    # the record outlives the jobs: everything the table needs is on disk
    record = read_sweep(stack.model_dir, sweep["id"])
    assert record is not None and record.settled
    assert {p.version for p in record.points} == {1, 2, 3, 4}
    # listed, drawn, and streamed to its end
    listed = stack.client.get("/sweeps").json()
    assert sweep["id"] in [s["id"] for s in listed]
    png = stack.client.get(f"/sweeps/{sweep['id']}/figure.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    with stack.client.stream("GET", f"/sweeps/{sweep['id']}/events") as events:
        lines = [line for line in events.iter_lines() if line.startswith("event:")]
    assert lines == ["event: end"]


def test_the_cli_shows_the_apis_sweep(stack: Stack, wait_for: Callable[..., Any],
                                      capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.settings import get_settings

    monkeypatch.setenv("AAE_API_URL", stack.live.base_url)
    get_settings.cache_clear()
    try:
        assert aae(["sweep", "submit", "--name", "cli", "--preset", "seed", "--mode",
                    "semi_supervised", "--labels", "100", "--epochs", "1", "--hidden", "64",
                    "--validation-size", "300", "--precision", "fp32",
                    "--grid", "seed=1,2", "--wait"]) == 0
        out = capsys.readouterr().out
        sweep_id = out.split()[2].rstrip(":")
        assert "| rank | point |" in out and "seed=1" in out and "seed=2" in out
        assert "over seeds" in out
        assert aae(["sweep", "list"]) == 0
        assert sweep_id in capsys.readouterr().out
        assert aae(["sweep", "show", sweep_id, "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["id"] == sweep_id and shown["counts"] == {"finished": 2}
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("body, where", [
    ({"grid": {"z_dim": [2, 0]}}, "z_dim"),  # the second point is invalid
    ({"points": [{"seed": 1}, {"epochs": -3}]}, "epochs"),
    ({"points": [{"seed": 1}, {"no_such_field": 1}]}, "no_such_field"),
    ({"grid": {"name": ["a", "b"]}}, "name"),  # one model per sweep
    ({"grid": {"seed": []}}, "grid"),
    ({"grid": {"seed": list(range(65))}}, "grid"),  # AAE_MAX_SWEEP_POINTS
])
def test_an_invalid_point_is_refused_before_anything_is_queued(
        stack: Stack, body: dict[str, Any], where: str) -> None:
    before = (len(job_records(stack.model_dir, "training")), len(sweep_records(stack.model_dir)),
              Queue("training", connection=Redis.from_url(stack.redis.url)).count)
    r = stack.client.post("/sweeps", json={"base": {**QUICK, "name": "bad"}, **body})
    assert r.status_code == 422, r.text
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert where in json.dumps(problem["errors"])
    if "points" in body:
        assert "point 1" in problem["detail"]
    after = (len(job_records(stack.model_dir, "training")), len(sweep_records(stack.model_dir)),
             Queue("training", connection=Redis.from_url(stack.redis.url)).count)
    assert after == before
    assert "bad" not in stack.store.models()


def test_a_grid_of_10_to_the_16_points_is_refused_at_once_without_growing(stack: Stack) -> None:
    """A 2 KB body whose lists multiply to 10^16 points: counted, not expanded."""
    grid = {field: list(range(100)) for field in ("seed", "z_dim", "hidden", "epochs",
                                                   "batch_size", "depth", "label_shift",
                                                   "n_labels")}
    process = psutil.Process()
    before = process.memory_info().rss
    start = time.perf_counter()
    r = stack.client.post("/sweeps", json={"base": {**QUICK, "name": "huge"}, "grid": grid})
    assert time.perf_counter() - start < 1.0
    assert r.status_code == 422, r.text
    assert "more than 64 points" in r.json()["detail"] and "AAE_MAX_SWEEP_POINTS" in r.text
    assert process.memory_info().rss - before < 50 * 2**20
    assert len(r.request.content) < 3000


def test_a_failed_point_says_why_in_the_api_the_cli_and_the_figure(
        stack: Stack, wait_for: Callable[..., Any], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A point whose validation split is larger than the dataset fails; its reason is in
    GET /sweeps/<id>, in aae sweep show, and in the figure's table."""
    r = stack.client.post("/sweeps", json={
        "base": {**QUICK, "name": "half-bad", "epochs": 1},
        "points": [{"seed": 1}, {"validation_size": 5000}]})
    assert r.status_code == 202, r.text
    sweep = _ended(stack, r.json()["id"], wait_for)
    failed = [p for p in sweep["points"] if p["status"] == "failed"]
    assert len(failed) == 1 and "validation_size" in failed[0]["error"]
    ok = [p for p in sweep["points"] if p["status"] == "finished"]
    assert len(ok) == 1 and ok[0]["error"] is None

    from cli.settings import get_settings
    monkeypatch.setenv("AAE_API_URL", stack.live.base_url)
    get_settings.cache_clear()
    try:
        assert aae(["sweep", "show", sweep["id"]]) == 0
    finally:
        get_settings.cache_clear()
    row = next(line for line in capsys.readouterr().out.splitlines() if "| failed" in line)
    assert "failed: " in row and "validation_size" in row

    figure = stack.client.get(f"/sweeps/{sweep['id']}/figure.png")
    assert figure.status_code == 200 and figure.headers["content-type"] == "image/png"


def test_cancel_stops_the_running_points_and_cancels_the_queued_ones(
        stack: Stack, wait_for: Callable[..., Any]) -> None:
    r = stack.client.post("/sweeps", json={"base": {**LONG, "name": "cancelled"},
                                           "grid": {"seed": [1, 2, 3, 4]},
                                           "promote": "production"})
    assert r.status_code == 202, r.text
    sweep_id = r.json()["id"]
    wait_for(lambda: stack.client.get(f"/sweeps/{sweep_id}").json()["counts"].get(
        "started") == 2, timeout=60, what="both workers to train a point")
    r = stack.client.post(f"/sweeps/{sweep_id}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"]
    sweep = _ended(stack, sweep_id, wait_for, timeout=90)
    assert sorted(p["status"] for p in sweep["points"]) == ["canceled", "canceled",
                                                           "stopped", "stopped"]
    assert sweep["promotion"]["state"] == "skipped"
    assert "cancelled" not in stack.store.models()  # nothing published
    assert stack.client.post(f"/sweeps/{sweep_id}/cancel").status_code == 409


def test_unknown_sweeps_are_404(stack: Stack) -> None:
    assert stack.client.get("/sweeps/nope").status_code == 404
    assert stack.client.post("/sweeps/nope/cancel").status_code == 404
    assert stack.client.get("/sweeps/nope/events").status_code == 404


def _version(store: CheckpointStore, name: str, mode: Mode, **metrics: Any) -> int:
    torch.manual_seed(0)
    model = AdversarialAutoencoder(AAEConfig(mode=mode, hidden=16, precision=Precision.FP32))
    return publish_model(store, name, model, metrics)


def test_a_gated_alias_moves_only_to_a_version_no_worse(stack: Stack) -> None:
    store, put = stack.store, stack.client.put
    semi = Mode.SEMI_SUPERVISED
    v1 = _version(store, "gated", semi, validation_error=0.05, validation_loss=0.2)
    v2 = _version(store, "gated", semi, validation_error=0.07, validation_loss=0.1)
    v3 = _version(store, "gated", semi, validation_error=0.05, validation_loss=0.3)
    v4 = _version(store, "gated", semi, validation_error=0.04, validation_loss=0.3)
    gate = {"unless_worse": "validation_error"}
    r = put("/models/gated/aliases/production", json={"version": v1, **gate})
    assert r.status_code == 200 and r.json()["version"] == v1  # unset: simply set
    r = put("/models/gated/aliases/production", json={"version": v2, **gate})
    assert r.status_code == 409, r.text
    problem = r.json()
    assert (problem["version"], problem["value"]) == (v2, 0.07)
    assert (problem["current_version"], problem["current_value"]) == (v1, 0.05)
    assert store.aliases("gated")["production"] == v1
    assert put("/models/gated/aliases/production",
               json={"version": v3, **gate}).json()["version"] == v3  # a tie moves it
    assert put("/models/gated/aliases/production",
               json={"version": v4, **gate}).json()["version"] == v4
    # by another metric, and ungated
    r = put("/models/gated/aliases/production",
            json={"version": v2, "unless_worse": "validation_loss"})
    assert r.status_code == 200 and r.json()["version"] == v2
    assert put("/models/gated/aliases/production", json={"version": v1}).status_code == 200
    # a version without the metric: 422, the alias untouched
    unsupervised = _version(store, "gated", Mode.UNSUPERVISED, validation_loss=0.5)
    r = put("/models/gated/aliases/production", json={"version": unsupervised, **gate})
    assert r.status_code == 422 and "validation_error" in r.json()["detail"]
    assert store.aliases("gated")["production"] == v1


def test_a_point_whose_worker_is_killed_resumes_and_the_sweep_still_promotes_once(
        tmp_path: Path, make_workers: Callable[..., Any], wait_for: Callable[..., Any]) -> None:
    """kill -9 of a worker and its work horse mid-point: a second worker resumes the point
    from its saved state, the sweep finishes and its best point is promoted, once."""
    import os
    import signal

    model_dir, workers = tmp_path / "models", make_workers()
    with EmbeddedRedis() as redis, LiveServer(model_dir, redis_url=redis.url,
                                              queue="crash") as live, \
            httpx.Client(base_url=live.base_url, timeout=30) as client:
        try:
            doomed = workers.start(redis.url, model_dir, queue="crash")
            r = client.post("/sweeps", json={
                "base": {**QUICK, "name": "crashy", "epochs": 8, "batch_size": 20},
                "grid": {"seed": [1, 2]}, "promote": "production"})
            assert r.status_code == 202, r.text
            sweep_id = r.json()["id"]

            def saved_point() -> str | None:
                for p in client.get(f"/sweeps/{sweep_id}").json()["points"]:
                    job = client.get(f"/jobs/{p['job']}").json()
                    if (job["checkpoint_epoch"] or 0) >= 2 and job["status"] == "started":
                        return p["job"]
                return None
            victim = wait_for(saved_point, timeout=120, what="a point with a saved state")
            horse = Job.fetch(victim, connection=Redis.from_url(redis.url),
                              serializer=JSONSerializer).meta["pid"]
            os.kill(horse, signal.SIGKILL)  # the work horse (RQ forks it into its own
            os.killpg(doomed.pid, signal.SIGKILL)  # session) and the worker
            doomed.wait()
            workers.start(redis.url, model_dir, queue="crash")
            sweep = _ended(Stack(redis, model_dir, CheckpointStore(model_dir), live, client),
                           sweep_id, wait_for, timeout=180)
            job = client.get(f"/jobs/{victim}").json()
        finally:
            workers.stop_all()
    assert [p["status"] for p in sweep["points"]] == ["finished", "finished"]
    assert job["attempts"] == 2 and job["resumed_from_epoch"] >= 2  # resumed, not redone
    store = CheckpointStore(model_dir)
    assert store.versions("crashy") == [1, 2]  # one version per point, none twice
    assert sweep["promotion"]["state"] == "promoted"
    assert store.aliases("crashy")["production"] == sweep["points"][0]["version"]
