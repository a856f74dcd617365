"""``worker.tasks.train`` run by a real worker process against a real Redis server.

One burst worker (it quits when the queue is empty) runs every job of the module: a job
per mode, a job whose dataset does not exist, and a job that finds its version already
published (as after a crash between publishing and finishing)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from aae.checkpoints import load_model, publish_model
from aae.config import AAEConfig, Mode, Precision
from aae.model import AdversarialAutoencoder
from aae.store import CheckpointStore
from aae_jobs.contract import JOBS_METRICS_KEY, datasets_key, stop_key
from aae_jobs.records import JobRecord, write_record
from cli.embedded_redis import EmbeddedRedis
from worker.settings import WorkerSettings
from worker.tasks import datasets

QUICK = {"epochs": 3, "hidden": 64, "validation_size": 300, "precision": Precision.FP32}
STEPS = 3 * (1700 // 100)  # 2,000 digits less 300 for validation, batches of 100


def quick_config(mode: Mode) -> AAEConfig:
    return AAEConfig(mode=mode, n_labels=100 if mode is Mode.SEMI_SUPERVISED else None,
                     **QUICK)


@dataclass
class Run:
    jobs: dict[str, Job]
    store: CheckpointStore
    model_dir: Path
    connection: Redis


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, make_workers: Callable[..., Any],
        enqueue_train: Callable[..., Job]) -> Iterator[Run]:
    enqueue = enqueue_train
    model_dir = tmp_path_factory.mktemp("tasks") / "models"
    store = CheckpointStore(model_dir)
    with EmbeddedRedis() as redis:
        queue = Queue("training", connection=Redis.from_url(redis.url),
                      serializer=JSONSerializer)
        jobs = {mode.value: enqueue(queue, f"m-{mode.value}", quick_config(mode))
                for mode in Mode}
        jobs["no-dataset"] = enqueue(queue, "never", quick_config(Mode.UNSUPERVISED),
                                     dataset="nonexistent")
        torch.manual_seed(0)
        publish_model(store, "guarded", AdversarialAutoencoder(quick_config(Mode.UNSUPERVISED)),
                      {"job_id": "already-published"})
        jobs["guarded"] = enqueue(queue, "guarded", quick_config(Mode.UNSUPERVISED),
                                  job_id="already-published")
        # cancelled before a worker took it, the way a worker sees it (its stop key)
        jobs["cancelled"] = enqueue(queue, "cancelled", quick_config(Mode.UNSUPERVISED))
        queue.connection.set(stop_key(jobs["cancelled"].id), 1)
        # answered 503 by the API, its enqueue reaching Redis anyway
        refused = JobRecord(id="refused-job", queue="training", name="refused",
                            config=quick_config(Mode.UNSUPERVISED).to_dict(), dataset="mnist",
                            job_timeout_s=600, retries=2, result_ttl_s=3600,
                            description="train refused on mnist", refused=True)
        write_record(model_dir, refused)
        jobs["refused"] = enqueue(queue, "refused", quick_config(Mode.UNSUPERVISED),
                                  job_id=refused.id)
        workers = make_workers()
        worker = workers.start(redis.url, model_dir, burst=True)
        assert worker.wait(300) == 0
        for job in jobs.values():
            job.refresh()
        yield Run(jobs, store, model_dir, queue.connection)


@pytest.mark.parametrize("mode", list(Mode))
def test_a_job_trains_reports_progress_and_publishes_one_version(run, mode):
    job = run.jobs[mode.value]
    assert job.get_status() == JobStatus.FINISHED
    name = f"m-{mode.value}"
    assert job.return_value() == {"model": name, "version": 1}
    assert run.store.versions(name) == [1]
    info, model = load_model(run.store, name)
    assert info.metrics["job_id"] == job.id and info.metrics["steps"] == STEPS
    assert info.metrics["dataset"] == "mnist"  # the dataset's name, not the worker's path
    assert model.cfg == quick_config(mode)
    meta = job.meta
    assert meta["attempts"] == 1 and meta["stage"] == "finished"
    assert meta["result"] == {"model": name, "version": 1}
    assert meta["resumed_from_epoch"] is None and meta["checkpoint_epoch"] == 2
    progress = meta["progress"]
    assert progress["step"] == progress["total_steps"] == STEPS
    assert progress["epoch"] == progress["epochs"] == 3 and progress["eta_s"] == 0
    assert set(progress["losses"]) >= {"reconstruction", "discriminator", "generator"}
    assert not (run.model_dir / ".jobs" / job.id).exists()  # the scratch state is gone


def test_a_failing_job_is_recorded_and_not_retried(run):
    job = run.jobs["no-dataset"]
    assert job.get_status() == JobStatus.FAILED
    assert job.meta["attempts"] == 1  # Retry(max=2) is for crashes, not for errors
    assert "DatasetNotFound" in job.latest_result().exc_string
    assert "unknown dataset 'nonexistent'" in job.latest_result().exc_string
    assert "never" not in run.store.models()


def test_a_job_cancelled_before_it_started_stops_before_loading_its_data(run):
    job = run.jobs["cancelled"]
    assert job.get_status() == JobStatus.STOPPED
    assert job.meta["stage"] == "stopped" and job.meta["attempts"] == 1
    assert job.meta.get("progress") is None  # no step taken
    assert "cancelled" not in run.store.models()


def test_a_refused_job_never_runs(run):
    job = run.jobs["refused"]
    assert job.get_status() == JobStatus.FAILED
    assert "was refused when it was submitted" in job.latest_result().exc_string
    assert job.meta.get("attempts") is None  # never started: not even counted
    assert "refused" not in run.store.models()


def test_outcomes_are_counted_by_the_callbacks(run):
    counts = {k.decode(): int(v) for k, v in run.connection.hgetall(JOBS_METRICS_KEY).items()}
    assert counts == {"finished|cpu": len(Mode) + 1,  # +1: "guarded"
                      "failed|cpu": 1, "stopped|cpu": 1,  # no dataset; cancelled
                      "failed|unknown": 1}  # refused before it picked a device


def test_the_worker_announces_its_datasets_while_it_lives(run):
    key = datasets_key("training")
    live = run.connection.zrangebyscore(key, time.time(), "+inf")
    assert live == [b"mnist"]
    # it lapses with the worker's registration (RQ's heartbeat: 90 s at most)
    assert run.connection.zscore(key, "mnist") < time.time() + 120


def test_a_worker_has_mnist_and_each_complete_dataset_of_its_datasets_dir(
        tmp_path, fixture_data_dir):
    shutil.copytree(fixture_data_dir, tmp_path / "digits-b")
    shutil.copytree(fixture_data_dir, tmp_path / "half")
    (tmp_path / "half" / "t10k-labels-idx1-ubyte.gz").unlink()  # three of four: not one
    (tmp_path / ".hidden").mkdir()
    assert datasets(WorkerSettings(datasets_dir=tmp_path)) == ["mnist", "digits-b"]
    assert datasets(WorkerSettings(datasets_dir=None)) == ["mnist"]


def test_a_job_that_already_published_publishes_nothing_new(run):
    job = run.jobs["guarded"]
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == {"model": "guarded", "version": 1}
    assert run.store.versions("guarded") == [1]
    assert "progress" not in job.meta  # it did not train again


def test_workers_share_the_queue_and_each_job_publishes_one_version(redis_server, workers,
                                                                     tmp_path, wait_for,
                                                                     enqueue_train):
    """Two workers on one queue and one store, four jobs for one model: both workers
    train, and the four jobs publish versions 1 to 4, one each."""
    from rq import Worker

    model_dir = tmp_path / "models"
    connection = Redis.from_url(redis_server.url)
    queue = Queue("training", connection=connection, serializer=JSONSerializer)
    for _ in range(2):
        workers.start(redis_server.url, model_dir)
    wait_for(lambda: len(Worker.all(queue=queue)) == 2, timeout=60, what="two workers")
    jobs = [enqueue_train(queue, "shared", quick_config(Mode.UNSUPERVISED)) for _ in range(4)]

    def ended() -> bool:
        return all(job.get_status() in (JobStatus.FINISHED, JobStatus.FAILED) for job in jobs)
    wait_for(ended, timeout=240, what="the four jobs")
    for job in jobs:
        job.refresh()
    assert [job.get_status() for job in jobs] == [JobStatus.FINISHED] * 4
    versions = sorted(job.return_value()["version"] for job in jobs)
    assert versions == [1, 2, 3, 4] == CheckpointStore(model_dir).versions("shared")
    assert len({job.meta["worker"] for job in jobs}) == 2
    for job in jobs:
        info = CheckpointStore(model_dir).info("shared", job.return_value()["version"])
        assert info.metrics["job_id"] == job.id
