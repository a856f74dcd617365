"""A full disk under the checkpoint store: the app over a store on a real tmpfs filled to
its last byte (the kernel's own ENOSPC), a real Redis, real HTTP. Every change answers
507 naming the store and changes nothing; a delete still frees space."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from redis import Redis

from aae_jobs.records import job_records, read_record
from aae_jobs.sweeps import sweep_records
from cli.embedded_redis import EmbeddedRedis
from service.app import create_app
from tests.aae.test_store import snapshot
from tests.service.conftest import LOOPBACK, service_settings


@pytest.fixture
def disk(small_disk, template_store: Path) -> Path:
    """An 8 MiB tmpfs holding a copy of the template's "digits" (versions 1 and 2, about
    5 MiB), with the alias production -> 1."""
    root = small_disk.mount(8 << 20)
    shutil.copytree(template_store / "digits", root / "models" / "digits")
    (root / "models" / "digits" / "aliases").mkdir()
    (root / "models" / "digits" / "aliases" / "production").write_text("1\n")
    return root


@pytest.fixture
def client(disk: Path) -> Iterator[TestClient]:
    threads = torch.get_num_threads()
    with EmbeddedRedis() as redis, TestClient(create_app(service_settings(
            disk / "models", redis_url=redis.url)), client=LOOPBACK) as client:
        yield client
    torch.set_num_threads(threads)


def check_507(response, problem, disk: Path) -> None:
    body = problem(response, 507)
    assert body["title"] == "Insufficient storage"
    assert body["store"] == str((disk / "models").resolve())
    assert f"the checkpoint store {body['store']} has no space left" in body["detail"]


def test_alias_moves_answer_507_and_leave_the_store_as_it_was(
        client: TestClient, disk: Path, small_disk, problem) -> None:
    assert client.put("/models/digits/aliases/staging", json={"version": 2}).status_code == 200
    small_disk.fill(disk)
    before = snapshot(disk / "models")
    for alias in ("production", "staging", "canary"):  # moved, moved, new
        check_507(client.put(f"/models/digits/aliases/{alias}", json={"version": 2}),
                  problem, disk)
        assert snapshot(disk / "models") == before, alias
    aliases = client.get("/models/digits").json()["aliases"]
    assert aliases == {"production": 1, "staging": 2, "latest": 2}


def test_a_delete_on_a_full_disk_frees_space(client: TestClient, disk: Path,
                                             small_disk) -> None:
    small_disk.fill(disk)
    free = os.statvfs(disk).f_bfree
    assert client.delete("/models/digits/versions/2").status_code == 204
    assert os.statvfs(disk).f_bfree > free
    assert client.get("/models/digits").json()["versions"] == [1]


def test_a_delete_that_cannot_be_written_answers_507_and_changes_nothing(
        client: TestClient, disk: Path, small_disk, problem) -> None:
    """The issue's fault: 500, an empty tombstone and the version's directory in place."""
    small_disk.fill(disk, inodes=True)
    before = snapshot(disk / "models")
    check_507(client.delete("/models/digits/versions/2"), problem, disk)
    assert snapshot(disk / "models") == before
    assert client.get("/models/digits").json()["versions"] == [1, 2]
    assert client.post("/encode?version=2", json={"pixels": [0.0] * 784}).status_code == 200


def test_job_and_sweep_submissions_answer_507_and_queue_nothing(
        client: TestClient, disk: Path, small_disk, problem) -> None:
    small_disk.fill(disk, inodes=False)
    model_dir = disk / "models"
    job = {"mode": "unsupervised", "epochs": 1}
    check_507(client.post("/jobs/train", json=job), problem, disk)
    check_507(client.post("/sweeps", json={"base": job, "grid": {"seed": [1, 2, 3]}}),
              problem, disk)
    assert job_records(model_dir, "training") == []
    assert sweep_records(model_dir) == []
    assert client.get("/jobs").json() == []


def test_a_sweep_whose_disk_fills_halfway_leaves_no_point_behind(
        client: TestClient, disk: Path, small_disk, problem) -> None:
    """Room for one job record (one page) but not three: the point written before the
    disk filled would be queued by the workers' recovery, a 507 that still trains."""
    small_disk.fill(disk)
    filler = disk / ".filler"
    os.truncate(filler, filler.stat().st_size - 4096)
    job = {"mode": "unsupervised", "epochs": 1}
    check_507(client.post("/sweeps", json={"base": job, "grid": {"seed": [1, 2, 3]}}),
              problem, disk)
    assert job_records(disk / "models", "training") == []
    assert sweep_records(disk / "models") == []


def test_a_cancel_that_cannot_be_recorded_answers_507_and_cancels_nothing(
        client: TestClient, disk: Path, small_disk, problem) -> None:
    job = client.post("/jobs/train", json={"mode": "unsupervised", "epochs": 1})
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    small_disk.fill(disk)
    check_507(client.post(f"/jobs/{job_id}/cancel"), problem, disk)
    (record,) = job_records(disk / "models", "training")
    assert not record.cancel_requested
    assert client.get(f"/jobs/{job_id}").json()["status"] == "queued"



JOB = {"mode": "unsupervised", "epochs": 1}
SWEEP = {"base": JOB, "grid": {"seed": [1]}}


@pytest.mark.parametrize("route,body,free_pages", [
    ("/jobs/train", JOB, 0), ("/jobs/train", JOB, 1),  # its key and record: two pages
    ("/sweeps", SWEEP, 0), ("/sweeps", SWEEP, 1), ("/sweeps", SWEEP, 2),  # and the sweep's
])
def test_a_keyed_submission_that_fills_the_disk_leaves_no_job(
        client: TestClient, disk: Path, small_disk, problem, route, body,
        free_pages) -> None:
    """Room for some of what an Idempotency-Key submission writes (its key, the job's
    record, the sweep's), not all: 507, and no record is left for the workers' recovery
    to queue (a 507 that still trains); once there is room, the key makes a job."""
    small_disk.fill(disk)
    model_dir = disk / "models"
    filler = disk / ".filler"
    os.truncate(filler, filler.stat().st_size - 4096 * free_pages)
    check_507(client.post(route, json=body, headers={"Idempotency-Key": "k-1"}),
              problem, disk)
    assert job_records(model_dir, "training") == []
    assert sweep_records(model_dir) == []
    assert client.get("/jobs").json() == []
    os.truncate(filler, filler.stat().st_size - 4096 * 16)
    again = client.post(route, json=body, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 202, again.text
    assert len(job_records(model_dir, "training")) == 1
    repeat = client.post(route, json=body, headers={"Idempotency-Key": "k-1"})
    assert (repeat.status_code, repeat.json()["id"]) == (200, again.json()["id"])


def test_a_503_on_a_full_disk_still_marks_its_record_refused(disk: Path, small_disk,
                                                             problem) -> None:
    """Redis holds the enqueue past the API's timeout (``CLIENT PAUSE ... WRITE``: reads
    answer) on a store with room for the job's record and nothing more: the 503 must
    still mark the record refused (an empty file, no block needed), or a late enqueue
    would run a job whose client was told 503."""
    with EmbeddedRedis() as redis, TestClient(create_app(service_settings(
            disk / "models", redis_url=redis.url, redis_breaker_s=0.5)),
            client=LOOPBACK) as client:
        small_disk.fill(disk)
        filler = disk / ".filler"
        os.truncate(filler, filler.stat().st_size - 4096)
        Redis.from_url(redis.url).client_pause(1500, all=False)
        problem(client.post("/jobs/train", json=JOB), 503)
    (record,) = job_records(disk / "models", "training")
    assert read_record(disk / "models", record.id).refused
