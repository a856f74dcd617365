"""The worker process (worker.runner) and the system's kills, with real processes: a job
whose training process is killed (SIGKILL, as the out-of-memory killer does) runs again,
resumed; killed a second time it fails with the reason instead of running a third time,
and its attempts count every start."""

from __future__ import annotations

import os
import signal

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from aae.config import AAEConfig, Precision
from aae.store import CheckpointStore
from aae_jobs.queueing import failure_reason

CONFIG = AAEConfig(hidden=64, batch_size=20, epochs=100, validation_size=300,
                   precision=Precision.FP32)  # 8,500 steps: killed long before the end


def training_pid(job: Job, other_than: int | None = None) -> int | None:
    job.refresh()
    pid = job.meta.get("pid")
    progress = job.meta.get("progress") or {}
    return pid if pid != other_than and progress.get("step", 0) > 0 else None


def test_a_job_killed_twice_by_the_system_fails_with_the_reason(
        redis_server, workers, tmp_path, wait_for, enqueue_train):
    connection = Redis.from_url(redis_server.url)
    job = enqueue_train(Queue("training", connection=connection, serializer=JSONSerializer),
                        "doomed", CONFIG, retries=3)
    workers.start(redis_server.url, tmp_path / "models")
    first = wait_for(lambda: training_pid(job), timeout=60, what="the first attempt")
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: training_pid(job, other_than=first), timeout=60,
                      what="the second attempt")
    assert job.meta["attempts"] == 2
    os.kill(second, signal.SIGKILL)

    wait_for(lambda: job.get_status() == JobStatus.FAILED, timeout=30, what="the failure")
    assert failure_reason(job) == ("killed by signal 9 (SIGKILL) 2 times: out of memory? "
                                   "(AAE_MAX_JOB_KILLS is 2)")
    job.refresh()
    assert job.meta["attempts"] == 2 and job.retries_left == 0  # one retry was left unused
    assert job.get_status() == JobStatus.FAILED  # not queued a third time
    assert CheckpointStore(tmp_path / "models").models() == []
