"""Finding the jobs of dead workers and handing them back to RQ, quickly.

RQ already handles abandoned jobs: an execution whose entry in the queue's
``StartedJobRegistry`` expires is retried (the job was enqueued with ``Retry``) by the
registry's cleanup. But the entry lives on the worker's heartbeat plus a fixed minute,
and a forked job outlives a worker killed alone. The job's own lease (see
``worker.control``) says better whether the training is alive, so before each RQ
maintenance pass a worker:

- expires, now, the registry entry of every started job whose lease has lapsed (and
  whose execution is older than a lease, so that a job still starting is spared);
- keeps the entry of every job whose lease is alive from expiring, even if the worker
  that forked it is gone.

RQ's cleanup then retries the expired ones; the retried job resumes from its saved
state. Scratch directories of jobs that have ended, or no longer exist, are removed.
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

from worker.control import lease_alive

logger = logging.getLogger(__name__)

ENDED = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED}


def expire_abandoned(queue: Queue, lease_ttl_s: float) -> list[str]:
    """Expire the started-registry entries of ``queue``'s dead jobs; returns their ids."""
    registry, connection = queue.started_job_registry, queue.connection
    now = time.time()
    abandoned = []
    for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
        member = f"{job_id}:{execution_id}"
        if lease_alive(connection, job_id):
            connection.zadd(registry.key, {member: now + lease_ttl_s + 60}, xx=True, gt=True)
            continue
        try:
            started = Execution.fetch(execution_id, job_id, connection).created_at.timestamp()
        except ValueError:  # the execution's record is gone: long dead
            started = 0.0
        if now - started < lease_ttl_s:
            continue  # still starting: the job takes its lease first thing
        connection.zadd(registry.key, {member: 0}, xx=True)
        abandoned.append(job_id)
        logger.warning("job %s lost its worker (no lease for %.0f s): handing it back to RQ",
                       job_id, lease_ttl_s)
    return abandoned


def remove_ended_scratch(scratch_root: Path, queue: Queue) -> None:
    """Remove the scratch directories of jobs that have ended or no longer exist."""
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
        if status is None or status in ENDED:
            shutil.rmtree(scratch_root / job_id, ignore_errors=True)
            logger.info("removed the scratch directory of ended job %s", job_id)
