"""Crash safety. With real processes: a job whose worker is killed mid-run (SIGKILL) is
picked up again and resumes from its last saved epoch, publishing one complete version
(the job is long enough to be caught mid-run: 12 epochs of 85 small steps, a resumable
state after every epoch). And how a worker tells dead jobs from live ones."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from aae.checkpoints import load_model
from aae.config import AAEConfig, Mode, Precision
from aae.resume import latest_epoch
from aae.store import CheckpointStore
from aae_jobs.contract import JOBS_METRICS_KEY, lapse_key, lease_key
from worker.recovery import expire_abandoned

EPOCHS, STEPS_PER_EPOCH = 12, 1700 // 20
CONFIG = AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=100, epochs=EPOCHS, batch_size=20,
                   hidden=64, validation_size=300, precision=Precision.FP32)


@pytest.fixture
def submit(enqueue_train):
    def submit(redis_url: str) -> Job:
        queue = Queue("training", connection=Redis.from_url(redis_url),
                      serializer=JSONSerializer)
        return enqueue_train(queue, "digits", CONFIG, retries=3)
    return submit


def saved_epoch(job: Job) -> int | None:
    job.refresh()
    return job.meta.get("checkpoint_epoch")


def dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie has stopped for good


def check_one_complete_version(model_dir: Path, job: Job) -> None:
    store = CheckpointStore(model_dir)
    assert store.versions("digits") == [1]
    assert sorted(p.name for p in (model_dir / "digits").iterdir()) == ["1"]  # no .tmp-*
    info, model = load_model(store, "digits")
    assert info.metrics["job_id"] == job.id
    assert info.metrics["steps"] == EPOCHS * STEPS_PER_EPOCH
    assert [h["epoch"] for h in info.metrics["history"]] == list(range(1, EPOCHS + 1))
    assert model.cfg == CONFIG
    assert not (model_dir / ".jobs" / job.id).exists()


@pytest.mark.parametrize("victim", ["worker and job", "job only"])
def test_a_killed_job_resumes_from_its_saved_epoch(victim, redis_server, workers, tmp_path,
                                                   wait_for, submit):
    """"worker and job": the machine is lost; another worker notices the job's lease lapse
    and hands it back to RQ. "job only": the work horse is OOM-killed; its own worker sees
    it die and RQ retries it."""
    model_dir = tmp_path / "models"
    job = submit(redis_server.url)
    first = workers.start(redis_server.url, model_dir)
    wait_for(lambda: (saved_epoch(job) or 0) >= 2, timeout=120, what="a saved epoch")
    horse = job.meta["pid"]
    if victim == "worker and job":
        first.kill()  # SIGKILL; the worker first, or it would retry the job itself
        first.wait()
    else:
        first.send_signal(signal.SIGSTOP)  # hold it while we look at what the job left
    os.kill(horse, signal.SIGKILL)
    wait_for(lambda: dead(horse), timeout=10, what="the job's process to die")
    resume_from = latest_epoch(model_dir / ".jobs" / job.id)
    assert 2 <= resume_from < EPOCHS
    if victim == "worker and job":
        workers.start(redis_server.url, model_dir)  # another machine's worker
    else:
        first.send_signal(signal.SIGCONT)

    wait_for(lambda: job.get_status() in (JobStatus.FINISHED, JobStatus.FAILED), timeout=120,
             what="the job to end")
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED, job.latest_result().exc_string
    assert job.meta["attempts"] == 2
    assert job.meta["resumed_from_epoch"] == resume_from  # not from scratch
    assert job.meta["pid"] != horse
    check_one_complete_version(model_dir, job)
    outcomes = Redis.from_url(redis_server.url).hgetall(JOBS_METRICS_KEY)
    assert outcomes == {b"finished|cpu": b"1"}  # the crash was no outcome: it was retried


def test_only_jobs_without_a_lease_for_a_whole_lease_are_handed_back(redis_server, submit):
    """Four started jobs, as a worker left them in RQ's started registry: one renews its
    lease, one has none, one has none but started a moment ago (it takes its lease first
    thing), one has none at the first look but renews before the second (as after a
    Redis outage longer than a lease). The first look only marks the missing leases;
    a look a lease later expires the job still without one, and RQ's own cleanup then
    requeues it."""
    ttl = 2.0
    connection = Redis.from_url(redis_server.url)
    queue = Queue("training", connection=connection, serializer=JSONSerializer)
    registry = queue.started_job_registry
    jobs = {}
    for name in ("alive", "dead", "renewed", "starting"):
        job = submit(redis_server.url)
        queue.remove(job)  # taken by a worker...
        with connection.pipeline() as pipe:  # ...which started it
            execution = Execution.create(job, ttl=600, pipeline=pipe, worker_name="w")
            job.set_status(JobStatus.STARTED, pipeline=pipe)
            pipe.execute()
        if name != "starting":
            connection.hset(execution.key, "created_at", time.time() - 120)
        jobs[name] = (job, execution.composite_key)
    connection.set(lease_key(jobs["alive"][0].id), "host:1", ex=60)

    assert expire_abandoned(queue, lease_ttl_s=ttl) == []  # missing once proves nothing
    assert connection.exists(lapse_key(jobs["dead"][0].id))
    renewed = jobs["renewed"][0].id
    connection.set(lease_key(renewed), "host:2", px=int(ttl * 1000))  # what a renewal does
    connection.delete(lapse_key(renewed))
    time.sleep(ttl + 0.2)
    connection.set(lease_key(renewed), "host:2", px=int(ttl * 1000))
    connection.set(lease_key(jobs["alive"][0].id), "host:1", ex=60)

    assert expire_abandoned(queue, lease_ttl_s=ttl) == [jobs["dead"][0].id]
    scores = {name: connection.zscore(registry.key, key) for name, (_, key) in jobs.items()}
    assert scores["dead"] == 0 and scores["alive"] > time.time() + 60
    assert time.time() < scores["starting"] <= time.time() + 600
    assert scores["renewed"] > time.time()

    registry.cleanup()
    statuses = {name: job.get_status() for name, (job, _) in jobs.items()}
    assert statuses == {"alive": JobStatus.STARTED, "dead": JobStatus.QUEUED,
                        "renewed": JobStatus.STARTED, "starting": JobStatus.STARTED}
    assert queue.get_job_ids() == [jobs["dead"][0].id]
