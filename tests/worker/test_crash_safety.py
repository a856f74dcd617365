"""Crash safety with real processes and a real Redis: one attempt's work takes effect and
a job publishes one version, whatever happens to its lease or to Redis.

Training starts are counted from Redis (``starts_key``: one entry per attempt that began
training, written under the fence) and versions from the store, never from log lines."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis import Redis
from rq import Callback, Queue, Retry, Worker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from aae.config import AAEConfig, Mode, Precision
from aae.store import CheckpointStore
from aae_jobs.contract import (ON_FAILURE, ON_STOPPED, TRAIN_TASK, lease_key, starts_key)
from cli.embedded_redis import EmbeddedRedis


def config(epochs: int) -> AAEConfig:
    """About a second an epoch on one thread: 85 small steps."""
    return AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=100, epochs=epochs, batch_size=20,
                     hidden=64, validation_size=300, precision=Precision.FP32)


@pytest.fixture
def durable_redis(tmp_path) -> Iterator[EmbeddedRedis]:
    """A Redis with an append-only file, so that it can be killed and started again."""
    with EmbeddedRedis(data_dir=tmp_path / "redis") as server:
        yield server


def queue_of(url: str) -> Queue:
    return Queue("training", connection=Redis.from_url(url), serializer=JSONSerializer)


def ended(job: Job) -> bool:
    try:
        return job.get_status() in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED)
    except Exception:  # Redis away for a moment  # noqa: BLE001
        return False


def training(job: Job) -> bool:
    job.refresh()
    return (job.meta.get("progress") or {}).get("step", 0) > 0


def check_one_run(job: Job, model_dir, starts: int = 1, attempts: int = 1) -> None:
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED, job.latest_result()
    assert job.connection.llen(starts_key(job.id)) == starts  # copies that began training
    assert job.meta["attempts"] == attempts
    store = CheckpointStore(model_dir)
    assert store.versions("digits") == [1]
    assert store.info("digits", 1).metrics["job_id"] == job.id
    assert job.return_value() == {"model": "digits", "version": 1}


def test_a_deleted_lease_never_starts_a_second_copy(durable_redis, workers, tmp_path,
                                                    wait_for, enqueue_train):
    """The lease of a running job is deleted again and again for two leases (3 s each),
    while an idle worker looks for dead jobs every second: no second copy ever trains."""
    model_dir = tmp_path / "models"
    job = enqueue_train(queue_of(durable_redis.url), "digits", config(6), retries=3)
    for _ in range(2):
        workers.start(durable_redis.url, model_dir)
    wait_for(lambda: training(job), timeout=60, what="training")
    connection = Redis.from_url(durable_redis.url)
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:
        connection.delete(lease_key(job.id))
        time.sleep(0.2)
    wait_for(lambda: ended(job), timeout=60, what="the job to end")
    check_one_run(job, model_dir)


@pytest.mark.parametrize("outage_s", [
    8.0,  # more than two leases and several heartbeats of the busy worker
    pytest.param(60.0, marks=pytest.mark.slow),
])
def test_a_busy_worker_rides_out_redis_being_away(outage_s, durable_redis, workers,
                                                  tmp_path, wait_for, enqueue_train):
    """Redis is killed (-9) mid-job and started again ``outage_s`` later: the busy worker
    and the idle one are still alive, the job trained on and finished, once; the idle
    worker did not take the job for dead although its lease had expired meanwhile."""
    model_dir = tmp_path / "models"
    epochs = 10 if outage_s < 30 else 40
    job = enqueue_train(queue_of(durable_redis.url), "digits", config(epochs), retries=3)
    busy = workers.start(durable_redis.url, model_dir)
    wait_for(lambda: training(job), timeout=60, what="training")
    idle = workers.start(durable_redis.url, model_dir)
    wait_for(lambda: len(Worker.all(queue=queue_of(durable_redis.url))) == 2, timeout=60,
             what="the idle worker")
    time.sleep(1.5)  # the job's start is on disk (appendfsync everysec)
    durable_redis.kill()
    time.sleep(outage_s)
    assert busy.poll() is None and idle.poll() is None
    durable_redis.restart()
    wait_for(lambda: ended(job), timeout=60 + outage_s, what="the job to end")
    assert busy.poll() is None and idle.poll() is None  # both still alive
    check_one_run(job, model_dir)


def test_ending_a_job_never_races_its_own_requeue(redis_server, workers, tmp_path, wait_for):
    """RQ records a job's success after its callbacks; a callback that takes longer than
    the lease (a slow one here: 4 s against a 1 s lease) must not let an idle worker take
    the returned job for dead and train it again."""
    model_dir = tmp_path / "models"
    fast = {"AAE_LEASE_TTL_S": "1", "AAE_MAINTENANCE_INTERVAL_S": "1"}
    queue = queue_of(redis_server.url)
    job = queue.enqueue(TRAIN_TASK, kwargs={"name": "digits", "config": config(3).to_dict(),
                                            "dataset": "mnist"},
                        retry=Retry(max=3), job_timeout=600,
                        on_success=Callback("tests.worker.slow_outcomes.on_success"),
                        on_failure=Callback(ON_FAILURE), on_stopped=Callback(ON_STOPPED))
    for _ in range(2):
        workers.start(redis_server.url, model_dir, **fast)
    wait_for(lambda: ended(job), timeout=90, what="the job to end")
    check_one_run(job, model_dir)
