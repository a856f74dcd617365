"""The worker process: RQ's forking worker on the training queue, with crash recovery,
announcing the datasets it has.

Each job runs in a forked work horse. The parent imports torch and the training code
before forking, so that jobs start at once, but never touches CUDA: a CUDA context does
not survive ``fork``. Jobs pick CUDA when present, in the horse.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from redis import Redis
from redis.client import Pipeline
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from aae.device import tune_cpu_allocator
from aae_jobs.contract import datasets_key
from worker import recovery
from worker.settings import WorkerSettings
from worker.tasks import SCRATCH_DIR, datasets  # also loads torch and aae before the first fork

logger = logging.getLogger(__name__)


class TrainingWorker(Worker):
    """An RQ ``Worker`` whose maintenance also hands the jobs of dead workers back to RQ
    (``worker.recovery``), and whose heartbeat also announces the datasets it has.
    Maintenance runs at start-up and every ``maintenance_interval`` seconds while idle.

    The announcement is ``datasets_key(queue)``, a sorted set: member, a dataset; score,
    when the announcement lapses, which is when the worker's own registration does. A
    busy worker keeps beating, so its datasets stay announced during a long job, and a
    dead worker's lapse with it."""

    def __init__(self, *args: Any, lease_ttl_s: float, scratch_root: Path,
                 datasets: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lease_ttl_s, self.scratch_root = lease_ttl_s, scratch_root
        self.datasets = datasets

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        super().heartbeat(timeout, pipeline)
        until = time.time() + (timeout or self.worker_ttl + 60)
        connection = pipeline if pipeline is not None else self.connection
        for queue in self.queues:
            key = datasets_key(queue.name)
            connection.zadd(key, {name: until for name in self.datasets}, gt=True)
            connection.zremrangebyscore(key, "-inf", time.time())

    def run_maintenance_tasks(self) -> None:
        for queue in self.queues:
            recovery.expire_abandoned(queue, self.lease_ttl_s)
        super().run_maintenance_tasks()  # RQ's cleanup retries what was expired
        for queue in self.queues:
            recovery.remove_ended_scratch(self.scratch_root, queue)


def connect(settings: WorkerSettings) -> Redis:
    return Redis.from_url(settings.redis_url, socket_connect_timeout=5, health_check_interval=30)


def make_worker(settings: WorkerSettings, connection: Redis) -> TrainingWorker:
    queue = Queue(settings.queue, connection=connection, serializer=JSONSerializer)
    return TrainingWorker(
        [queue], connection=connection, serializer=JSONSerializer,
        # an idle worker wakes every maintenance interval (RQ blocks for worker_ttl - 15 s)
        worker_ttl=settings.maintenance_interval_s + 15,
        maintenance_interval=settings.maintenance_interval_s,
        lease_ttl_s=settings.lease_ttl_s, scratch_root=settings.model_dir / SCRATCH_DIR,
        datasets=datasets(settings))


def run(settings: WorkerSettings, burst: bool = False) -> bool:
    """Work on the training queue until stopped (or, with ``burst``, until it is empty).
    SIGINT or SIGTERM stops after the current job; a second one stops at once, and the
    job is resumed elsewhere. Returns whether any job was run."""
    if torch.cuda.is_initialized():  # it would not survive the fork of every job
        raise RuntimeError("CUDA is initialised in the worker process before forking")
    tune_cpu_allocator()
    connection = connect(settings)
    training_worker = make_worker(settings, connection)
    logger.info("worker %s: queue %r on %s, checkpoint store %s, datasets %s",
                training_worker.name, settings.queue, connection.connection_pool,
                settings.model_dir, ", ".join(training_worker.datasets))
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    return training_worker.work(burst=burst, logging_level=level)
