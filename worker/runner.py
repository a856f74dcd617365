"""The worker process: RQ's forking worker on the training queue, with crash recovery.

Each job runs in a forked work horse. The parent imports torch and the training code
before forking, so that jobs start at once, but never touches CUDA: a CUDA context does
not survive ``fork``. Jobs pick CUDA when present, in the horse.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from redis import Redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from aae.device import tune_cpu_allocator
from worker import recovery
from worker.settings import WorkerSettings
from worker.tasks import SCRATCH_DIR  # also loads torch and aae before the first fork

logger = logging.getLogger(__name__)


class TrainingWorker(Worker):
    """An RQ ``Worker`` whose maintenance also hands the jobs of dead workers back to RQ
    (``worker.recovery``). Maintenance runs at start-up and every ``maintenance_interval``
    seconds while idle."""

    def __init__(self, *args: Any, lease_ttl_s: float, scratch_root: Path,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lease_ttl_s, self.scratch_root = lease_ttl_s, scratch_root

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
        lease_ttl_s=settings.lease_ttl_s, scratch_root=settings.model_dir / SCRATCH_DIR)


def run(settings: WorkerSettings, burst: bool = False) -> bool:
    """Work on the training queue until stopped (or, with ``burst``, until it is empty).
    SIGINT or SIGTERM stops after the current job; a second one stops at once, and the
    job is resumed elsewhere. Returns whether any job was run."""
    if torch.cuda.is_initialized():  # it would not survive the fork of every job
        raise RuntimeError("CUDA is initialised in the worker process before forking")
    tune_cpu_allocator()
    connection = connect(settings)
    training_worker = make_worker(settings, connection)
    logger.info("worker %s: queue %r on %s, checkpoint store %s", training_worker.name,
                settings.queue, connection.connection_pool, settings.model_dir)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    return training_worker.work(burst=burst, logging_level=level)
