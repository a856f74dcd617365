"""Training jobs in Redis, as the service sees them: submit, look up, list, cancel.

The service never imports worker code: what it shares with the workers (the task's
dotted name, the outcome callbacks, the Redis keys, the statuses, the job's meta) is
``aae_jobs.contract``. Cancelling a running job sets the stop key, which the job reads
between two training steps; RQ then records it as ``stopped`` (the contract's docstring
says why it is done so). A job's status is RQ's.

A job for a dataset that no live worker of the queue has announced is refused (422).
While no worker has announced any, jobs are accepted unchecked, and say so
(``dataset_checked``): the API cannot tell an unknown dataset from an absent worker.

A job answered 202 is never lost: its durable record (``aae_jobs.records``) is written
to the checkpoint store, and fsynced, before it is queued in Redis; the workers queue
it again should Redis lose it, and until they have, ``GET /jobs/{id}`` reads it from
the record (status ``queued``). A cancel is written into the record too.

A job whose estimated memory or steps exceed the workers' budget (``aae.budget``,
``AAE_MAX_JOB_MEMORY``, ``AAE_MAX_JOB_STEPS``) is refused (422 naming the field).

The routes call Redis through ``JobQueue.run``: short socket timeouts, a circuit
breaker and threads of their own (``service.jobs.breaker``), so that a Redis that is
down, paused or slow gets a fast 503 with ``Retry-After`` and never holds the threads
the other routes need. A submission answered 503 marks its record refused
(``aae_jobs.records.refuse``): its enqueue may still reach a paused Redis later, and a
worker then fails it at once. With an ``Idempotency-Key`` the same key and body return
the first request's job (``aae_jobs.idempotency``). Nothing here caches Redis' answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as RedisRetry
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer

from aae import budget
from aae_jobs import idempotency
from aae_jobs.contract import (ENDED, STOP_TTL_S, TRAIN_TASK, JobMeta, JobStatus,
                               datasets_key, stop_key)
from aae_jobs.queueing import enqueue, failure_reason
from aae_jobs.idempotency import KeyEntry, body_hash, key_name
from aae_jobs.records import JobRecord, read_record, refuse, update_record, write_record
from service.core.errors import JobEnded, JobNotFound, QueueUnavailable
from service.jobs.breaker import Breaker, Calls
from service.jobs.schemas import TrainJobCreate, TrainJobPublic
from service.settings import ServiceSettings

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# RQ's statuses as the API shows them: RQ's waiting states all read as queued
_STATUS = {
    RQStatus.QUEUED: JobStatus.QUEUED, RQStatus.DEFERRED: JobStatus.QUEUED,
    RQStatus.SCHEDULED: JobStatus.QUEUED, RQStatus.CREATED: JobStatus.QUEUED,
    RQStatus.STARTED: JobStatus.STARTED, RQStatus.FINISHED: JobStatus.FINISHED,
    RQStatus.FAILED: JobStatus.FAILED, RQStatus.CANCELED: JobStatus.CANCELED,
    RQStatus.STOPPED: JobStatus.STOPPED,
}


def _status(job: Job) -> JobStatus:
    return _STATUS.get(job.get_status(refresh=False), JobStatus.QUEUED)


class JobQueue:
    """The training queue of one Redis."""

    def __init__(self, connection: Redis, settings: ServiceSettings) -> None:
        self.connection = connection
        self.queue = Queue(settings.queue, connection=connection, serializer=JSONSerializer)
        self.timeout_s, self.retries = settings.job_timeout_s, settings.job_retries
        self.result_ttl_s = settings.job_result_ttl_s
        self.model_dir = Path(settings.model_dir)
        self.max_memory, self.max_steps = settings.max_job_memory, settings.max_job_steps
        self.breaker = Breaker(settings.redis_breaker_s)
        self.calls = Calls(self.breaker, settings.job_threads, settings.job_wait_s)

    @classmethod
    def connect(cls, settings: ServiceSettings) -> JobQueue:
        """A client for ``settings.redis_url``; it connects on first use, so the service
        starts (and serves inference) without Redis. No command waits on Redis longer
        than ``redis_timeout_s``, and none is retried: the breaker decides when to try
        again."""
        timeout = settings.redis_timeout_s
        connection = Redis.from_url(settings.redis_url, socket_connect_timeout=timeout,
                                    socket_timeout=timeout, health_check_interval=30,
                                    retry=RedisRetry(NoBackoff(), 0))
        return cls(connection, settings)

    async def run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``call(*args, **kwargs)`` (one that talks to Redis), off the event loop on the
        job routes' own threads, behind the breaker (``service.jobs.breaker``)."""
        return await self.calls.run(call, *args, **kwargs)

    def close(self) -> None:
        self.connection.close()

    # -- submitting ----------------------------------------------------------------------

    def datasets(self) -> set[str]:
        """The datasets the queue's live workers have announced (none: no worker has)."""
        key = datasets_key(self.queue.name)
        return {name.decode() for name in
                self.connection.zrangebyscore(key, time.time(), "+inf")}

    def check_dataset(self, params: TrainJobCreate) -> bool:
        """Refuse (422) a dataset that no live worker has; returns whether it could be
        checked (false while no worker has announced any)."""
        announced = self.datasets()
        if announced and params.dataset not in announced:
            raise RequestValidationError([{
                "type": "unknown_dataset", "loc": ("body", "dataset"),
                "msg": f"no worker has dataset {params.dataset!r} (they have: "
                       f"{', '.join(sorted(announced))})", "input": params.dataset}])
        return bool(announced)

    def check_budget(self, params: TrainJobCreate, loc: tuple[Any, ...] = ("body",)) -> None:
        """Refuse (422, at ``loc`` + the field that weighs most) a job whose estimated
        memory or steps exceed the workers' budget."""
        try:
            budget.check(params.config(), max_memory_bytes=self.max_memory,
                         max_steps=self.max_steps, memory_setting="AAE_MAX_JOB_MEMORY",
                         steps_setting="AAE_MAX_JOB_STEPS")
        except budget.OverBudget as exc:
            raise RequestValidationError([{
                "type": "over_budget", "loc": (*loc, exc.field), "msg": str(exc),
                "input": exc.estimate}]) from None

    def record(self, params: TrainJobCreate, dataset_checked: bool, *,
               sweep: str | None = None, request_id: str | None = None) -> JobRecord:
        """The durable record of a job for ``params`` (written by ``submit``)."""
        name = params.model_name()
        return JobRecord(
            id=str(uuid.uuid4()), queue=self.queue.name, name=name,
            config=params.config().to_dict(), dataset=params.dataset,
            dataset_checked=dataset_checked, job_timeout_s=self.timeout_s,
            retries=self.retries, result_ttl_s=self.result_ttl_s,
            description=f"train {name} on {params.dataset}", sweep=sweep,
            request_id=request_id)

    def submit(self, params: TrainJobCreate, request_id: str | None = None,
               key: str | None = None) -> tuple[TrainJobPublic, bool]:
        """Queue the job; refuse (422) a dataset that no live worker has, or a job over
        the budget. With an idempotency ``key``: the job an earlier request with this key
        and body made, if any. Returns the job and whether this request made it."""
        self.check_budget(params)
        if key is None:
            return self._submit(params, request_id), True
        name = key_name(self.queue.name, "job", key)
        body = body_hash(params.model_dump(mode="json", exclude_unset=True))
        with idempotency.locked(self.model_dir, name):
            entry = idempotency.read_key(self.model_dir, name)
            if entry is not None and (earlier := self.keyed(entry, body)) is not None:
                return earlier, False
            return self._submit(params, request_id, lambda record: idempotency.write_key(
                self.model_dir, name, KeyEntry(kind="job", queue=self.queue.name,
                                               body=body, id=record.id))), True

    def keyed(self, entry: KeyEntry, body: str) -> TrainJobPublic | None:
        """The job of an idempotency key; None if the key is free again (its job was
        refused, or has been forgotten); 422 if it was used with another body."""
        record = read_record(self.model_dir, entry.id)
        if record is not None and record.refused:
            return None
        try:
            job = self.get(entry.id)
        except JobNotFound:
            return None
        if entry.body != body:
            raise RequestValidationError([{
                "type": "idempotency_key_reused", "loc": ("header", "Idempotency-Key"),
                "msg": f"this key was used for job {entry.id} with another body",
                "input": None}])
        return job

    def _submit(self, params: TrainJobCreate, request_id: str | None,
                keyed: Callable[[JobRecord], None] | None = None) -> TrainJobPublic:
        """Write the idempotency key (``keyed``), then the record, then queue the job: a
        failure before the record is written leaves no job (a key whose job has no record
        is free), and one after it marks the record refused (``enqueue``)."""
        record = self.record(params, self.check_dataset(params), request_id=request_id)
        if keyed is not None:
            keyed(record)
        write_record(self.model_dir, record)  # durable before Redis hears of it
        return self.enqueue(record)

    def enqueue(self, record: JobRecord) -> TrainJobPublic:
        """Queue a job whose record is written. If Redis does not answer (or anything
        else fails), the record is marked refused (answered 503, or whatever the failure
        is: never to run, even if the enqueue reaches Redis later), unless a worker has
        started the job meanwhile: then it was accepted."""
        try:
            job = enqueue(self.queue, record)
        except Exception:
            if not self.refuse(record.id):
                logger.warning("job %s: Redis did not confirm its enqueue, but a worker "
                               "has started it: accepted", record.id)
                return _from_record(record.model_copy(update={"started": True}))
            raise
        logger.info("queued job %s: %s", job.id, record.description)
        if not record.dataset_checked:
            logger.warning("job %s: dataset %r not checked, no worker has announced its "
                           "datasets yet", job.id, record.dataset)
        return self._public(job, cancel_requested=False)

    def refuse(self, job_id: str) -> bool:
        """Mark a job refused; False if a worker had started it already."""
        record = refuse(self.model_dir, job_id)
        if record is not None and record.refused:
            logger.warning("job %s refused: the job queue did not confirm it", job_id)
        return record is None or record.refused

    # -- reading -------------------------------------------------------------------------

    def _fetch(self, job_id: str) -> Job:
        try:
            job = Job.fetch(job_id, connection=self.connection, serializer=JSONSerializer)
        except NoSuchJobError:
            record = read_record(self.model_dir, job_id)
            if record is None or record.queue != self.queue.name:
                raise JobNotFound(f"no job {job_id!r}") from None
            raise _Recorded(record) from None
        if job.origin != self.queue.name or job.func_name != TRAIN_TASK:
            raise JobNotFound(f"no job {job_id!r}")
        return job

    def _cancel_requested(self, job_ids: list[str]) -> list[bool]:
        with self.connection.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(stop_key(job_id))
            return [bool(n) for n in pipe.execute()]

    def _public(self, job: Job, cancel_requested: bool) -> TrainJobPublic:
        kwargs: dict[str, Any] = job.kwargs
        meta = JobMeta.model_validate(job.meta)
        status = _status(job)
        return TrainJobPublic(
            id=job.id, status=status, model=kwargs["name"], dataset=kwargs["dataset"],
            config=kwargs["config"], created_at=job.created_at,
            started_at=job.started_at, ended_at=job.ended_at if status in ENDED else None,
            dataset_checked=meta.dataset_checked, stage=meta.stage, progress=meta.progress,
            attempts=meta.attempts, resumed_from_epoch=meta.resumed_from_epoch,
            checkpoint_epoch=meta.checkpoint_epoch,
            samples=(f"/jobs/{job.id}/samples/latest.png?epoch={meta.sample_epoch}"
                     if meta.sample_epoch is not None else None),
            cancel_requested=cancel_requested or status in (JobStatus.CANCELED,
                                                            JobStatus.STOPPED),
            sweep=meta.sweep,
            result=meta.result if status is JobStatus.FINISHED else None,
            error=failure_reason(job) if status is JobStatus.FAILED else None)

    def get(self, job_id: str) -> TrainJobPublic:
        try:
            job = self._fetch(job_id)
        except _Recorded as recorded:  # Redis lost it; a worker queues it again soon
            return _from_record(recorded.record)
        return self._public(job, self._cancel_requested([job.id])[0])

    def recent(self, status: JobStatus | None = None, limit: int = 100) -> list[TrainJobPublic]:
        """The newest ``limit`` jobs, newest first, optionally of one status."""
        q = self.queue
        sources = {
            JobStatus.QUEUED: [q.deferred_job_registry, q.scheduled_job_registry],
            JobStatus.STARTED: [q.started_job_registry],
            JobStatus.FINISHED: [q.finished_job_registry],
            JobStatus.FAILED: [q.failed_job_registry],
            JobStatus.STOPPED: [q.failed_job_registry],  # where RQ keeps stopped jobs
            JobStatus.CANCELED: [q.canceled_job_registry],
        }
        wanted = [status] if status is not None else list(JobStatus)
        ids: list[str] = []
        if JobStatus.QUEUED in wanted:
            ids += q.get_job_ids(0, limit)
        for registry in {id(r): r for s in wanted for r in sources[s]}.values():
            ids += registry.get_job_ids(0, limit - 1, desc=True, cleanup=False)
        ids = list(dict.fromkeys(ids))
        jobs = [job for job in Job.fetch_many(ids, connection=self.connection,
                                              serializer=JSONSerializer)
                if job is not None and job.func_name == TRAIN_TASK]
        if status is not None:
            jobs = [job for job in jobs if _status(job) is status]
        jobs.sort(key=lambda job: job.created_at, reverse=True)
        jobs = jobs[:limit]
        flags = self._cancel_requested([job.id for job in jobs])
        return [self._public(job, flag) for job, flag in zip(jobs, flags, strict=True)]

    async def follow(self, job_id: str, poll_s: float) -> AsyncIterator[TrainJobPublic]:
        """The job now and each time it changes, until it has ended. Ends early if Redis
        goes away (a client that reconnects then gets the 503)."""
        last = None
        while True:
            try:
                job = await self.run(self.get, job_id)
            except (QueueUnavailable, RedisConnectionError, RedisTimeoutError,
                    JobNotFound) as exc:
                logger.warning("stopped following job %s: %s", job_id, exc)
                return
            if job != last:
                last = job
                yield job
            if job.status in ENDED:
                return
            await asyncio.sleep(poll_s)

    # -- cancelling ----------------------------------------------------------------------

    def cancel(self, job_id: str) -> TrainJobPublic:
        """A queued job is canceled; a running one is asked to stop at its next step (it
        publishes nothing). The stop flag is set first, so that a job a worker takes in
        the meantime stops too."""
        try:
            job = self._fetch(job_id)
        except _Recorded as recorded:
            job, status = None, JobStatus.QUEUED
            record = recorded.record
        else:
            status, record = _status(job), read_record(self.model_dir, job_id)
        if status in ENDED:
            raise JobEnded(f"job {job_id} has already ended: {status.value}")
        if record is not None:  # the cancel outlives a Redis that forgets it
            update_record(self.model_dir, job_id, cancel_requested=True)
        self.connection.set(stop_key(job_id), 1, ex=STOP_TTL_S)
        if job is None:
            logger.info("asked job %s to stop (Redis lost it; it is queued again soon)",
                        job_id)
            return self.get(job_id)
        if status is JobStatus.QUEUED:
            try:
                job.cancel()
            except InvalidJobOperation:  # ended or canceled meanwhile
                pass
            logger.info("canceled job %s", job.id)
        else:
            logger.info("asked job %s to stop", job.id)
        return self.get(job.id)


class _Recorded(Exception):
    """A job Redis does not know but its durable record does."""

    def __init__(self, record: JobRecord) -> None:
        super().__init__(record.id)
        self.record = record


def _from_record(record: JobRecord) -> TrainJobPublic:
    """A job known only by its record: queued (again), nothing run that Redis recalls."""
    return TrainJobPublic(
        id=record.id, status=JobStatus.QUEUED, model=record.name, dataset=record.dataset,
        config=record.config,
        created_at=datetime.fromtimestamp(record.created_at, timezone.utc),
        started_at=None, ended_at=None, dataset_checked=record.dataset_checked,
        stage=None, progress=None, attempts=0, resumed_from_epoch=None,
        checkpoint_epoch=None, cancel_requested=record.cancel_requested,
        sweep=record.sweep, result=None,
        error=None)


async def get_job_queue(request: Request) -> JobQueue:
    return request.app.state.jobs


JobQueueDep = Annotated[JobQueue, Depends(get_job_queue)]
