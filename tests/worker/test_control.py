"""A running job and a hung Redis (the real server, SIGSTOPped), with a real worker: the job
trains on at full speed while Redis answers nothing (its stop flag is read, and its
progress sent, off the training loop), then reports what it did and publishes once Redis
answers again."""

from __future__ import annotations

import time

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from aae.config import AAEConfig, Precision
from aae.store import CheckpointStore

# long enough that training outlasts the pause on a quiet machine too (1,000 steps took
# 1.7 s of training there: no report could come 2 s past the one before the pause)
CONFIG = AAEConfig(hidden=64, batch_size=20, epochs=100, max_steps=5000, validation_size=300,
                   precision=Precision.FP32)
PAUSE_S = 2.0


def progress(job: Job) -> dict | None:
    job.refresh()
    return job.meta.get("progress")


def test_a_job_trains_on_through_a_hung_redis_and_publishes_after(
        redis_server, workers, tmp_path, wait_for, enqueue_train, paused):
    connection = Redis.from_url(redis_server.url)
    job = enqueue_train(Queue("training", connection=connection, serializer=JSONSerializer),
                        "steady", CONFIG)
    workers.start(redis_server.url, tmp_path / "models")
    before = wait_for(lambda: (p := progress(job)) and p["step"] >= 100 and p,
                      timeout=60, what="training")
    with paused(redis_server.process):
        time.sleep(PAUSE_S)
    # the first report after Redis resumed: the steps trained meanwhile
    after = wait_for(lambda: (p := progress(job)) and p["elapsed_s"] > before["elapsed_s"]
                     + PAUSE_S and p, timeout=30, what="a report after the pause")
    rate_before = before["step"] / before["elapsed_s"]
    rate_across = (after["step"] - before["step"]) / (after["elapsed_s"] - before["elapsed_s"])
    assert rate_across > 0.5 * rate_before, (rate_across, rate_before)

    wait_for(lambda: job.get_status() in (JobStatus.FINISHED, JobStatus.FAILED), timeout=120,
             what="the job to end")
    assert job.get_status() == JobStatus.FINISHED, job.latest_result().exc_string
    job.refresh()
    assert job.meta["result"] == {"model": "steady", "version": 1}
    assert job.meta["progress"]["step"] == 5000 and job.meta["attempts"] == 1
    assert CheckpointStore(tmp_path / "models").versions("steady") == [1]
