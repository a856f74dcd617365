"""``aae up``, the README's first command, as a new user runs it: no Redis configured, so
it starts its own; a job submitted over HTTP trains, and its model serves /sample; Ctrl-C
stops every process it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def up_env(tmp_path: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    """A new user's environment: no Redis configured, no API key."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "AAE_REDIS_URL", "AAE_API_KEY")}
    env = {k: v for k, v in env.items() if k not in ("AAE_DEVICE", "AAE_TORCH_THREADS")}
    env.update(AAE_MODEL_DIR=str(tmp_path / "models"), AAE_DATA_DIR=str(data_dir),
               AAE_API_TORCH_THREADS="1", AAE_WORKER_TORCH_THREADS="1", **extra)
    return env


def start_up(tmp_path: Path, env: dict[str, str], port: int, wait_for,
             **popen: Any) -> subprocess.Popen:
    """``aae up`` (its output in up.log; ``popen``: more of Popen's arguments), once its
    API answers."""
    with (tmp_path / "up.log").open("a") as log:
        up = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                              **popen)

    def serving() -> bool:
        assert up.poll() is None, (tmp_path / "up.log").read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        except httpx.TransportError:
            return False
    wait_for(serving, timeout=120, what="the API", interval=0.2)
    return up


def ctrl_c(up: subprocess.Popen, tmp_path: Path) -> None:
    up.send_signal(signal.SIGINT)
    assert up.wait(60) == 0, (tmp_path / "up.log").read_text()


def test_up_runs_redis_a_worker_and_the_api_and_stops_them_on_ctrl_c(
        tmp_path, fixture_data_dir, wait_for):
    port = free_port()
    up = start_up(tmp_path, up_env(tmp_path, fixture_data_dir), port, wait_for)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            children = psutil.Process(up.pid).children(recursive=True)
            names = " ".join(" ".join(p.cmdline()) for p in children)
            assert "redis-server" in names and "-m worker" in names and "uvicorn" in names
            # the API's connection limits (service.core.connections) hold under aae up
            assert client.get("/healthz", headers={"X-Filler": "a" * 20000}).status_code == 431

            submitted = client.post("/jobs/train", json={
                "mode": "semi_supervised", "n_labels": 100, "epochs": 2, "hidden": 64,
                "validation_size": 300})
            assert submitted.status_code == 202, submitted.text
            job = client.get(submitted.headers["location"]).json()
            assert job["model"] == "mnist-semi-supervised"  # the API's default model
            def ended() -> dict | None:
                now = client.get(f"/jobs/{job['id']}").json()
                return now if now["status"] in ("finished", "failed") else None
            done = wait_for(ended, timeout=120, what="the job", interval=0.2)
            assert done["status"] == "finished", done
            sample = client.get("/sample", params={"label": 7})
            assert sample.status_code == 200 and sample.headers["content-type"] == "image/png"
            assert sample.headers["x-model"] == "mnist-semi-supervised"
    finally:
        ctrl_c(up, tmp_path)
    alive = psutil.wait_procs(children, timeout=10)[1]
    assert not alive, f"still running after Ctrl-C: {alive}"
    assert (tmp_path / "models" / ".redis" / "dump.rdb").is_file()  # the queue was saved
    # it said where the store is
    assert f"checkpoint store: {tmp_path / 'models'}" in (tmp_path / "up.log").read_text()


def test_up_started_with_sigint_ignored_still_stops_on_kill_int(tmp_path, fixture_data_dir,
                                                               wait_for):
    """A non-interactive shell starts background jobs with SIGINT ignored; aae up installs
    its own handler, so kill -INT stops it and everything it started, in order."""
    port = free_port()
    up = start_up(tmp_path, up_env(tmp_path, fixture_data_dir), port, wait_for,
                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    children = psutil.Process(up.pid).children(recursive=True)
    ctrl_c(up, tmp_path)
    assert not psutil.wait_procs(children, timeout=10)[1]


@pytest.mark.slow
def test_a_job_interrupted_by_ctrl_c_resumes_at_the_next_up(tmp_path, fixture_data_dir,
                                                           wait_for):
    port = free_port()
    env = up_env(tmp_path, fixture_data_dir, AAE_CHECKPOINT_EVERY="1", AAE_LEASE_TTL_S="3",
                 AAE_MAINTENANCE_INTERVAL_S="1")
    base = f"http://127.0.0.1:{port}"
    up = start_up(tmp_path, env, port, wait_for)
    try:
        job = httpx.post(f"{base}/jobs/train", json={
            "mode": "semi_supervised", "n_labels": 100, "epochs": 40, "batch_size": 20,
            "hidden": 64, "validation_size": 300}).json()
        url = f"{base}/jobs/{job['id']}"
        wait_for(lambda: httpx.get(url).json()["checkpoint_epoch"], timeout=120,
                 what="a saved epoch", interval=0.2)
    finally:
        ctrl_c(up, tmp_path)

    up = start_up(tmp_path, env, port, wait_for)
    try:
        assert httpx.get(url).json()["status"] == "started"  # as the queue was saved
        def ended() -> dict | None:
            now = httpx.get(url).json()
            return now if now["status"] in ("finished", "failed") else None
        done = wait_for(ended, timeout=300, what="the job", interval=0.5)
    finally:
        ctrl_c(up, tmp_path)
    assert done["status"] == "finished" and done["attempts"] == 2, done
    assert done["resumed_from_epoch"] >= 1 and done["result"]["version"] == 1


def child_pids(up: subprocess.Popen, marker: str) -> list[int]:
    """The live processes under ``aae up`` whose command line holds ``marker``."""
    pids = []
    for process in psutil.Process(up.pid).children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and marker in " ".join(
                    process.cmdline()):
                pids.append(process.pid)
        except psutil.Error:  # gone meanwhile
            continue
    return pids


def training_processes(model_dir: Path) -> list[psutil.Process]:
    """Work horses of this test's workers, wherever they are (an orphan leaves aae up's
    tree): forks of ``python -m worker`` whose parent is one too, or whose parent is gone."""
    found = []
    for process in psutil.process_iter(["cmdline", "ppid"]):
        try:
            if ("-m worker" not in " ".join(process.info["cmdline"] or [])
                    or process.environ().get("AAE_MODEL_DIR") != str(model_dir)
                    or process.status() == psutil.STATUS_ZOMBIE):
                continue
            parent = psutil.Process(process.info["ppid"])
            if "-m worker" in " ".join(parent.cmdline()) or parent.pid == 1:
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_a_killed_workers_training_dies_with_it_and_the_job_resumes_once(
        tmp_path, fixture_data_dir, wait_for):
    """kill -9 of the worker alone under aae up --workers 1: its training process dies
    with it, so at most one training runs at any moment while aae up brings a worker
    back, and the job resumes and publishes one version."""
    port = free_port()
    env = up_env(tmp_path, fixture_data_dir, AAE_CHECKPOINT_EVERY="1", AAE_LEASE_TTL_S="3",
                 AAE_MAINTENANCE_INTERVAL_S="1")
    up = start_up(tmp_path, env, port, wait_for)
    model_dir = tmp_path / "models"
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            job = client.post("/jobs/train", json={
                "mode": "semi_supervised", "n_labels": 100, "hidden": 64, "batch_size": 20,
                "validation_size": 300, "epochs": 8}).json()["id"]
            wait_for(lambda: ((client.get(f"/jobs/{job}").json().get("progress") or {})
                              .get("step")), timeout=60, what="training", interval=0.2)
            (horse,) = training_processes(model_dir)
            worker = horse.parent()
            worker.kill()
            wait_for(lambda: not horse.is_running() or horse.status() == psutil.STATUS_ZOMBIE,
                     timeout=5, what="the training to die with its worker", interval=0.05)
            counts, deadline = [], time.monotonic() + 120
            while time.monotonic() < deadline:
                counts.append(len(training_processes(model_dir)))
                now = client.get(f"/jobs/{job}").json()
                if now["status"] in ("finished", "failed", "stopped"):
                    break
                time.sleep(0.1)
    finally:
        ctrl_c(up, tmp_path)
    assert max(counts) <= 1, counts
    assert now["status"] == "finished" and now["attempts"] == 2, now
    assert now["result"]["version"] == 1


def redis_url(up: subprocess.Popen) -> str:
    """The URL ``aae up`` handed its children."""
    (worker,) = child_pids(up, "-m worker")
    return psutil.Process(worker).environ()["AAE_REDIS_URL"]


def test_up_brings_back_redis_and_a_worker_and_no_accepted_job_is_lost(
        tmp_path, fixture_data_dir, wait_for):
    """kill -9 of the embedded Redis within 100 ms of a 202, and again mid-job, and of the
    worker: each comes back, the API serves throughout, and each job publishes one
    version and ends finished (the first one after Redis forgot it, from its record)."""
    from redis import Redis

    from aae.store import CheckpointStore
    from aae_jobs.contract import starts_key

    port = free_port()
    env = up_env(tmp_path, fixture_data_dir, AAE_CHECKPOINT_EVERY="1", AAE_LEASE_TTL_S="3",
                 AAE_MAINTENANCE_INTERVAL_S="1")
    up = start_up(tmp_path, env, port, wait_for)
    body = {"mode": "semi_supervised", "n_labels": 100, "hidden": 64, "batch_size": 20,
            "validation_size": 300}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            (api,) = child_pids(up, "uvicorn")

            def status(job_id: str) -> dict | None:
                answer = client.get(f"/jobs/{job_id}")
                return answer.json() if answer.status_code == 200 else None  # 503: away

            def finished(job_id: str) -> dict | None:
                now = status(job_id)
                assert now is None or now["status"] not in ("failed", "stopped"), now
                return now if now and now["status"] == "finished" else None

            # 1. Redis dies within 100 ms of the 202: the job is still run
            (redis,) = child_pids(up, "redis-server")
            submitted = client.post("/jobs/train", json={**body, "epochs": 2})
            answered = time.monotonic()
            os.kill(redis, signal.SIGKILL)
            assert time.monotonic() - answered < 0.1
            assert submitted.status_code == 202, submitted.text
            first = submitted.json()["id"]
            wait_for(lambda: child_pids(up, "redis-server") not in ([], [redis]),
                     timeout=30, what="Redis to come back")
            wait_for(lambda: finished(first), timeout=90, what="the first job", interval=0.3)

            # 2. Redis dies mid-job: it comes back and the job finishes, trained once
            second = client.post("/jobs/train", json={**body, "epochs": 6}).json()["id"]
            wait_for(lambda: ((status(second) or {}).get("progress") or {}).get("step"),
                     timeout=60, what="training", interval=0.2)
            time.sleep(1.5)  # its start is on disk (appendfsync everysec)
            (redis,) = child_pids(up, "redis-server")
            os.kill(redis, signal.SIGKILL)
            wait_for(lambda: child_pids(up, "redis-server") not in ([], [redis]),
                     timeout=30, what="Redis to come back")
            done = wait_for(lambda: finished(second), timeout=90, what="the second job",
                            interval=0.3)
            assert done["attempts"] == 1 and done["result"]["version"] == 2

            # 3. the worker dies: another one is started
            (worker,) = child_pids(up, "-m worker")
            os.kill(worker, signal.SIGKILL)
            wait_for(lambda: child_pids(up, "-m worker") not in ([], [worker]), timeout=30,
                     what="a new worker")
            assert client.get("/healthz").status_code == 200
            assert child_pids(up, "uvicorn") == [api]  # the API was never stopped
            with Redis.from_url(redis_url(up)) as connection:
                assert connection.llen(starts_key(second)) == 1
    finally:
        ctrl_c(up, tmp_path)
    store = CheckpointStore(tmp_path / "models")
    assert store.versions("mnist-semi-supervised") == [1, 2]
    assert [store.info("mnist-semi-supervised", v).metrics["job_id"] for v in (1, 2)] == [
        first, second]
