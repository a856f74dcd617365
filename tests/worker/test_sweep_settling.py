"""Settling a sweep (``worker.sweeps``) against a real Redis: outcomes recorded once
every point has ended, the promotion done exactly once, completed after a worker died
halfway, and never redone."""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path

import pytest
import torch
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from aae.checkpoints import publish_model
from aae.config import AAEConfig, Mode, Precision
from aae.model import AdversarialAutoencoder
from aae.store import CheckpointStore
from aae_jobs.sweeps import SweepPoint, SweepPromotion, SweepRecord, read_sweep, write_sweep
from worker.sweeps import settle, settle_all


def _queue(url: str) -> Queue:
    return Queue("training", connection=Redis.from_url(url), serializer=JSONSerializer)


def _point(queue: Queue, store: CheckpointStore, status: JobStatus,
           error: float | None) -> str:
    """A job as a worker leaves it: its status, and for a finished one its version."""
    job = Job.create("worker.tasks.train", connection=queue.connection,
                     serializer=JSONSerializer, id=str(uuid.uuid4()), origin=queue.name)
    if status == JobStatus.FINISHED:
        torch.manual_seed(0)
        model = AdversarialAutoencoder(AAEConfig(mode=Mode.SEMI_SUPERVISED, hidden=8,
                                                 precision=Precision.FP32))
        version = publish_model(store, "swept", model, {"validation_error": error,
                                                        "job_id": job.id})
        job.meta["result"] = {"model": "swept", "version": version}
    job.set_status(status)
    job.save()
    return job.id


def _sweep(model_dir: Path, jobs: list[str], promotion: SweepPromotion | None = None
           ) -> SweepRecord:
    record = SweepRecord(id=str(uuid.uuid4()), queue="training", name="swept",
                         dataset="mnist", base={}, rank_by="validation_error",
                         promote="production", promotion=promotion,
                         points=[SweepPoint(index=i, overrides={"seed": i}, job_id=j)
                                 for i, j in enumerate(jobs)])
    write_sweep(model_dir, record)
    return record


@pytest.fixture
def setup(redis_server, tmp_path):
    queue, store = _queue(redis_server.url), CheckpointStore(tmp_path)
    return queue, store, tmp_path


def test_a_sweep_settles_only_once_every_point_has_ended(setup):
    queue, store, model_dir = setup
    best = _point(queue, store, JobStatus.FINISHED, 0.1)
    other = _point(queue, store, JobStatus.FINISHED, 0.2)
    running = _point(queue, store, JobStatus.STARTED, None)
    record = _sweep(model_dir, [other, best, running])
    assert not settle(queue, model_dir, record.id)
    assert "production" not in store.aliases("swept")
    # the last point's own callback: RQ records its end after the callback returns
    assert settle(queue, model_dir, record.id, ending={running: "failed"})
    settled = read_sweep(model_dir, record.id)
    assert settled.settled
    assert [p.status for p in settled.points] == ["finished", "finished", "failed"]
    assert settled.promotion.state == "promoted"
    assert store.aliases("swept")["production"] == settled.promotion.version == 1  # best


def test_a_promotion_a_dead_worker_left_halfway_is_completed_not_redone(setup):
    queue, store, model_dir = setup
    jobs = [_point(queue, store, JobStatus.FINISHED, e) for e in (0.3, 0.1)]
    # died after writing its intent, before moving the alias
    intent = SweepPromotion(state="promoting", alias="production", version=2, previous=None,
                            metric="validation_error", value=0.1)
    record = _sweep(model_dir, jobs, intent)
    assert settle(queue, model_dir, record.id)
    assert store.aliases("swept")["production"] == 2
    assert read_sweep(model_dir, record.id).promotion.state == "promoted"

    # died after moving the alias, before recording it: recorded, nothing moved
    again = _sweep(model_dir, jobs, intent.model_copy(update={"previous": 1}))
    assert settle(queue, model_dir, again.id)
    assert read_sweep(model_dir, again.id).promotion.state == "promoted"
    assert store.aliases("swept")["production"] == 2

    # someone moved the alias elsewhere in between: left alone
    store.set_alias("swept", "production", 1)
    third = _sweep(model_dir, jobs, intent.model_copy(update={"previous": None}))
    settle_all(queue, model_dir)
    promotion = read_sweep(model_dir, third.id).promotion
    assert promotion.state == "skipped" and "someone else" in promotion.reason
    assert store.aliases("swept")["production"] == 1


def _settle_in_a_process(url: str, model_dir: str, sweep_id: str) -> None:
    settle(_queue(url), Path(model_dir), sweep_id)


def test_workers_settling_at_once_promote_once_and_a_later_pass_never_again(
        setup, redis_server):
    queue, store, model_dir = setup
    jobs = [_point(queue, store, JobStatus.FINISHED, e) for e in (0.2, 0.1, 0.3)]
    record = _sweep(model_dir, jobs)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_settle_in_a_process,
                                 args=(redis_server.url, str(model_dir), record.id))
                 for _ in range(3)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
        assert p.exitcode == 0
    settled = read_sweep(model_dir, record.id)
    assert settled.promotion.state == "promoted" and settled.promotion.version == 2
    # a person moves the alias back; no later settling undoes it
    store.set_alias("swept", "production", 3)
    settle(queue, model_dir, record.id)
    settle_all(queue, model_dir)
    assert store.aliases("swept")["production"] == 3
    assert read_sweep(model_dir, record.id).promotion == settled.promotion


def test_a_refused_promotion_records_both_figures(setup):
    queue, store, model_dir = setup
    current = _point(queue, store, JobStatus.FINISHED, 0.01)
    store.set_alias("swept", "production", 1)
    record = _sweep(model_dir, [_point(queue, store, JobStatus.FINISHED, 0.2)])
    assert current
    assert settle(queue, model_dir, record.id)
    promotion = read_sweep(model_dir, record.id).promotion
    assert promotion.state == "refused"
    assert (promotion.version, promotion.value) == (2, 0.2)
    assert (promotion.previous, promotion.previous_value) == (1, 0.01)
    assert store.aliases("swept")["production"] == 1
