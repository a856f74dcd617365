"""Finding the jobs of dead workers and the jobs Redis lost, and handing them back to RQ.

RQ already handles abandoned jobs: an execution whose entry in the queue's
``StartedJobRegistry`` expires is retried (the job was enqueued with ``Retry``) by the
registry's cleanup. But the entry lives on the worker's heartbeat plus a fixed minute,
and a forked job outlives a worker killed alone. The job's own lease (see
``worker.control``) says better whether the training is alive, so before each RQ
maintenance pass a worker:

- restores the jobs Redis lost (``restore_lost``): every durable record
  (``aae_jobs.records``) whose job Redis does not know is queued again under its id,
  unless the API refused it (answered 503); records of jobs that ended long enough ago
  are removed, and so are the idempotency keys (``aae_jobs.idempotency``) of jobs and
  sweeps that are gone;
- expires, now, the registry entry of every started job whose lease has been missing
  for a whole lease (``expire_abandoned``). One look at a missing lease proves nothing:
  Redis may have just come back without it (an outage longer than a lease), or lost it.
  So the first look marks the lapse (``lapse_key``, in Redis' own clock) and only a look
  a lease later that finds it still missing, with no renewal in between, gives up on
  the job. A live job renews within a third of a lease, clearing the mark;
- keeps the entries of every job whose lease is alive, or only lapsing, from expiring,
  even if the worker that forked it is gone.

RQ's cleanup then retries the expired ones; the retried job resumes from its saved
state. Scratch directories of jobs that have ended, or no longer exist and have no
record, are removed, and so are temporary directories that a killed writer left.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue

from aae_jobs.contract import STOP_TTL_S, lapse_key, restore_lock, stop_key
from aae_jobs.idempotency import key_entries, remove_key
from aae_jobs.queueing import enqueue
from aae_jobs.records import (RECORD_GRACE_S, RESTORE_AFTER_S, job_records,
                              read_record, remove_record, remove_stale_temporaries)
from aae_jobs.sweeps import read_sweep
from worker.control import lease_alive

logger = logging.getLogger(__name__)

ENDED = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED}
TMP_PREFIX = ".tmp-"  # aae.atomic's staged directories
STALE_TMP_S = 600.0  # a staged directory this old lost its writer


def expire_abandoned(queue: Queue, lease_ttl_s: float) -> list[str]:
    """Expire the started-registry entries of ``queue``'s dead jobs; returns their ids."""
    registry, connection = queue.started_job_registry, queue.connection
    entries: dict[str, list[str]] = {}
    for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
        entries.setdefault(job_id, []).append(execution_id)
    abandoned = []
    for job_id, execution_ids in entries.items():
        members = [f"{job_id}:{e}" for e in execution_ids]
        now = time.time()
        if lease_alive(connection, job_id) or _starting(connection, job_id, execution_ids,
                                                         now, lease_ttl_s):
            _keep(connection, registry.key, members, now + lease_ttl_s + 60)
            continue
        # missing: dead only once it has been missing for a whole lease
        mark, mark_ms = lapse_key(job_id), int(lease_ttl_s * 10_000)
        connection.set(mark, 1, nx=True, px=mark_ms)
        missing_s = (mark_ms - max(0, connection.pttl(mark))) / 1000
        if missing_s < lease_ttl_s:
            _keep(connection, registry.key, members, now + lease_ttl_s + 60)
            continue
        connection.zadd(registry.key, {m: 0 for m in members}, xx=True)
        connection.delete(mark)
        abandoned.append(job_id)
        logger.warning("job %s lost its worker (no lease for %.0f s): handing it back to RQ",
                       job_id, missing_s)
    return abandoned


def _starting(connection, job_id: str, execution_ids: list[str], now: float,
              lease_ttl_s: float) -> bool:
    """Whether the newest execution began less than a lease ago (the job takes its lease
    first thing)."""
    newest = 0.0
    for execution_id in execution_ids:
        try:
            started = Execution.fetch(execution_id, job_id, connection).created_at.timestamp()
        except ValueError:  # the execution's record is gone: long dead
            started = 0.0
        newest = max(newest, started)
    return now - newest < lease_ttl_s


def _keep(connection, key: str, members: list[str], until: float) -> None:
    connection.zadd(key, {m: until for m in members}, xx=True, gt=True)


def restore_lost(queue: Queue, model_dir: Path, worker_name: str) -> list[str]:
    """Reconcile ``queue``'s durable job records with Redis; returns the ids queued again."""
    connection, restored = queue.connection, []
    for record in job_records(model_dir, queue.name):
        now = time.time()
        try:
            job = Job.fetch(record.id, connection=connection, serializer=queue.serializer)
        except NoSuchJobError:
            job = None
        if job is None:
            if now - record.created_at < RESTORE_AFTER_S:
                continue  # the API may be queueing it right now
            if now - record.created_at > record.result_ttl_s:
                remove_record(model_dir, record.id)  # ended and expired long ago
                continue
            if record.refused:
                continue  # never accepted: it must not run (removed once it expires)
            if not connection.set(restore_lock(record.id), worker_name, nx=True, ex=60):
                continue  # another worker is restoring it
            if record.cancel_requested:
                connection.set(stop_key(record.id), 1, ex=STOP_TTL_S)
            enqueue(queue, record)
            restored.append(record.id)
            logger.warning("job %s was lost by Redis: queued again from its record", record.id)
            continue
        if record.cancel_requested and not connection.exists(stop_key(record.id)):
            connection.set(stop_key(record.id), 1, ex=STOP_TTL_S)
        status = job.get_status(refresh=False)
        if status is JobStatus.QUEUED and _astray(queue, job.id):
            connection.lrem(queue.intermediate_queue_key, 0, job.id)
            queue.enqueue_job(job)
            restored.append(record.id)
            logger.warning("job %s was queued but in no queue (taken by a worker as Redis "
                           "died?): queued again", record.id)
        if status in ENDED:
            ended = job.ended_at or job.enqueued_at or job.created_at
            if ended is None or now - ended.timestamp() > RECORD_GRACE_S:
                remove_record(model_dir, record.id)
    remove_stale_temporaries(model_dir)
    remove_forgotten_keys(queue, model_dir)
    return restored


def remove_forgotten_keys(queue: Queue, model_dir: Path) -> None:
    """Remove the idempotency keys of ``queue`` whose job (neither its record nor Redis
    knows it) or sweep (its record) is gone, or whose job was refused."""
    now = time.time()
    for name, entry in key_entries(model_dir):
        if entry.queue != queue.name or now - entry.created_at < RESTORE_AFTER_S:
            continue  # a submission may be writing it
        if entry.kind == "sweep":
            gone = read_sweep(model_dir, entry.id) is None
        else:
            record = read_record(model_dir, entry.id)
            gone = (record.refused if record is not None else
                    not queue.connection.exists(Job.key_for(entry.id)))
        if gone:
            remove_key(model_dir, name)


def _astray(queue: Queue, job_id: str) -> bool:
    """Whether a queued job has been in no queue for ``RESTORE_AFTER_S`` (measured by
    Redis' clock with ``lapse_key``, as a lease lapse): popped by a worker that died or
    lost Redis before starting it. A job a worker is taking is started within
    milliseconds."""
    connection = queue.connection
    if connection.lpos(queue.key, job_id) is not None:
        return False
    mark, mark_ms = lapse_key(job_id), int(RESTORE_AFTER_S * 10_000)
    connection.set(mark, 1, nx=True, px=mark_ms)
    if (mark_ms - max(0, connection.pttl(mark))) / 1000 < RESTORE_AFTER_S:
        return False
    return bool(connection.delete(mark))  # one worker wins


def remove_ended_scratch(scratch_root: Path, queue: Queue, model_dir: Path) -> None:
    """Remove the scratch directories of jobs that have ended, or that no longer exist
    and have no record (a recorded job is restored and resumes from its scratch)."""
    try:
        names = [p.name for p in scratch_root.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return
    for job_id in names:
        try:
            status = Job.fetch(job_id, connection=queue.connection,
                               serializer=queue.serializer).get_status(refresh=False)
        except NoSuchJobError:
            status = None
            if read_record(model_dir, job_id) is not None:
                continue
        if status is None or status in ENDED:
            shutil.rmtree(scratch_root / job_id, ignore_errors=True)
            logger.info("removed the scratch directory of ended job %s", job_id)


def remove_stale_staging(model_dir: Path) -> None:
    """Staged directories (``.tmp-*``) of writers killed mid-write, in the store and in
    the scratch directories, once they are ``STALE_TMP_S`` old."""
    now = time.time()
    try:
        parents = [p for p in Path(model_dir).iterdir() if p.is_dir()]
    except FileNotFoundError:
        return
    for parent in parents:
        subdirs = [parent]
        if parent.name.startswith("."):  # .jobs/<id>/
            subdirs = [p for p in parent.iterdir() if p.is_dir()]
        for directory in subdirs:
            for tmp in directory.glob(f"{TMP_PREFIX}*"):
                try:
                    if tmp.is_dir() and now - tmp.stat().st_mtime > STALE_TMP_S:
                        shutil.rmtree(tmp, ignore_errors=True)
                        logger.info("removed %s, left by a killed writer", tmp)
                except OSError:
                    continue
