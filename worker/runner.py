"""The worker process: RQ's forking worker on the training queue, with crash recovery,
announcing the datasets it has, and riding out Redis outages of any length.

RQ's worker quits on the first Redis error outside its idle wait (a busy worker's
heartbeat raises in the parent). Here every bookkeeping call to Redis that RQ makes
outside a job (heartbeats, state, maintenance, the suspension check) logs a failure
instead of raising it, the work horse keeps training meanwhile (``worker.control``),
and should RQ's loop still give up, ``run`` starts it again after a backoff, so the
process lives on until it is asked to stop.

Each job runs in a forked work horse. The parent imports torch and the training code
before forking, so that jobs start at once, but never touches CUDA: a CUDA context does
not survive ``fork``. Jobs pick CUDA when present, in the horse. A horse dies with its
worker (``die_with_parent``), so a host runs at most as many trainings as workers.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from aae.device import flush_denormals, tune_cpu_allocator
from aae_jobs.contract import STOP_TTL_S, datasets_key, kills_key
from rq.executions import Execution
from rq.job import Job

from worker import recovery, sweeps
from worker.settings import WorkerSettings
from worker.tasks import SCRATCH_DIR, datasets  # also loads torch and aae before the first fork

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux's
    ``PR_SET_PDEATHSIG``), and exit now if ``parent_pid`` is already gone (it died before
    the request was made). Elsewhere the horse checks nothing: a warning says so."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    except (OSError, AttributeError) as exc:
        logger.warning("a training process cannot die with its worker here: %s", exc)
        return
    if os.getppid() != parent_pid:
        os._exit(1)


class TrainingWorker(Worker):
    """An RQ ``Worker`` whose maintenance also hands the jobs of dead workers back to RQ
    (``worker.recovery``), and whose heartbeat also announces the datasets it has.
    Maintenance runs at start-up and every ``maintenance_interval`` seconds while idle.

    The announcement is ``datasets_key(queue)``, a sorted set: member, a dataset; score,
    when the announcement lapses, which is when the worker's own registration does. A
    busy worker keeps beating, so its datasets stay announced during a long job, and a
    dead worker's lapse with it."""

    def __init__(self, *args: Any, lease_ttl_s: float, model_dir: Path,
                 datasets: list[str], max_job_kills: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lease_ttl_s, self.model_dir = lease_ttl_s, model_dir
        self.max_job_kills = max_job_kills
        self._killed: dict[str, str] = {}  # job id -> why it fails: killed too often
        self.scratch_root = model_dir / SCRATCH_DIR
        self.datasets = datasets
        self.stopping = False  # asked to stop (SIGINT, SIGTERM), as opposed to giving up
        self.worker_pid = os.getpid()  # the horse's parent

    def setup_work_horse_signals(self) -> None:
        """RQ's signals in the horse, and the horse's death with its worker's: a worker
        killed outright (kill -9, the out-of-memory killer) takes its training with it,
        so a restarted worker never trains beside an orphan, and the job is resumed under
        the lease rules."""
        super().setup_work_horse_signals()
        die_with_parent(self.worker_pid)

    def handle_work_horse_killed(self, job: Job, retpid: int, ret_val: int,
                                 rusage: Any) -> None:
        """A work horse ended by a signal it did not ask for (the out-of-memory killer,
        ``kill -9``): count it against the job (``kills_key``); once it has been killed
        ``max_job_kills`` times the job fails with the reason instead of running again.
        Either way the job keeps the meta its horse wrote (RQ saves this process' copy
        next, which predates the run)."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        if not (ret_val and os.WIFSIGNALED(ret_val)):
            return
        number = os.WTERMSIG(ret_val)
        try:
            job.get_meta(refresh=True)
            with self.connection.pipeline() as pipe:
                pipe.incr(kills_key(job.id))
                pipe.expire(kills_key(job.id), STOP_TTL_S)
                kills = int(pipe.execute()[0])
        except RedisError as exc:
            logger.warning("job %s: cannot count its kill: %s", job.id, exc)
            return
        if kills >= self.max_job_kills:
            job.retries_left = 0
            name = signal.Signals(number).name if number in signal.valid_signals() else "?"
            self._killed[job.id] = (
                f"killed by signal {number} ({name}) {kills} times"
                f"{': out of memory?' if number == signal.SIGKILL else ''} "
                f"(AAE_MAX_JOB_KILLS is {self.max_job_kills})")
            logger.error("job %s %s: it fails", job.id, self._killed[job.id])

    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry: Any = None,
                           exc_string: str = "", execution: Execution | None = None) -> None:
        super().handle_job_failure(job, queue, started_job_registry,
                                   self._killed.pop(job.id, exc_string), execution)

    def request_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True
        super().request_stop(signum, frame)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        try:
            super().heartbeat(timeout, pipeline)
            until = time.time() + (timeout or self.worker_ttl + 60)
            connection = pipeline if pipeline is not None else self.connection
            for queue in self.queues:
                key = datasets_key(queue.name)
                connection.zadd(key, {name: until for name in self.datasets}, gt=True)
                connection.zremrangebyscore(key, "-inf", time.time())
        except RedisError as exc:  # RQ's idle wait backs off; a busy worker beats again
            logger.warning("worker %s: no heartbeat, Redis unavailable: %s", self.name, exc)

    def maintain_heartbeats(self, job: Job, execution: Execution) -> None:
        try:
            super().maintain_heartbeats(job, execution)
        except RedisError as exc:  # the horse trains on; beats resume with Redis
            logger.warning("worker %s: no heartbeat for job %s, Redis unavailable: %s",
                           self.name, job.id, exc)

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        try:
            super().set_state(state, pipeline)
        except RedisError as exc:
            logger.warning("worker %s: cannot record its state: %s", self.name, exc)

    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except RedisError as exc:
            logger.warning("worker %s: cannot check for suspension: %s", self.name, exc)

    def run_maintenance_tasks(self) -> None:
        try:
            for queue in self.queues:
                recovery.restore_lost(queue, self.model_dir, self.name)
                recovery.expire_abandoned(queue, self.lease_ttl_s)
            super().run_maintenance_tasks()  # RQ's cleanup retries what was expired
            for queue in self.queues:
                recovery.remove_ended_scratch(self.scratch_root, queue, self.model_dir)
            recovery.remove_stale_staging(self.model_dir)
            for queue in self.queues:
                sweeps.settle_all(queue, self.model_dir)
        except RedisError as exc:  # RQ's idle wait backs off until Redis is back
            logger.warning("worker %s: maintenance postponed, Redis unavailable: %s",
                           self.name, exc)


def connect(settings: WorkerSettings) -> Redis:
    # a reply never takes longer than RQ's idle wait (worker_ttl - 15 s), less a dead peer
    return Redis.from_url(settings.redis_url, socket_connect_timeout=5,
                          socket_timeout=settings.maintenance_interval_s + 30,
                          health_check_interval=30)


def make_worker(settings: WorkerSettings, connection: Redis) -> TrainingWorker:
    queue = Queue(settings.queue, connection=connection, serializer=JSONSerializer)
    return TrainingWorker(
        [queue], connection=connection, serializer=JSONSerializer,
        # an idle worker wakes every maintenance interval (RQ blocks for worker_ttl - 15 s)
        worker_ttl=settings.maintenance_interval_s + 15,
        maintenance_interval=settings.maintenance_interval_s,
        # a busy worker beats (and notices its horse end) every lease
        job_monitoring_interval=max(1, min(30, int(settings.lease_ttl_s))),
        lease_ttl_s=settings.lease_ttl_s, model_dir=settings.model_dir,
        datasets=datasets(settings), max_job_kills=settings.max_job_kills)


def run(settings: WorkerSettings, burst: bool = False) -> bool:
    """Work on the training queue until stopped (or, with ``burst``, until it is empty).
    SIGINT or SIGTERM stops after the current job; a second one stops at once, and the
    job is resumed elsewhere. Returns whether any job was run."""
    if torch.cuda.is_initialized():  # it would not survive the fork of every job
        raise RuntimeError("CUDA is initialised in the worker process before forking")
    tune_cpu_allocator()
    flush_denormals()  # before torch starts its threads: the forked jobs inherit it
    connection = connect(settings)
    training_worker = make_worker(settings, connection)
    logger.info("worker %s: queue %r, checkpoint store %s, datasets %s", training_worker.name,
                settings.queue, settings.model_dir, ", ".join(training_worker.datasets))
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    worked, delay = False, 1.0
    while True:
        try:
            worked = training_worker.work(burst=burst, logging_level=level) or worked
        except RedisError as exc:  # at start-up or shut-down, outside RQ's loop
            logger.warning("worker %s: Redis unavailable: %s", training_worker.name, exc)
        if burst or training_worker.stopping:
            return worked
        logger.warning("worker %s: RQ's loop gave up (Redis?); starting again in %.0f s",
                       training_worker.name, delay)
        time.sleep(delay)
        delay = min(30.0, delay * 2)
        training_worker = make_worker(settings, connection)
