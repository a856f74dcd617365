"""How a job ended, recorded by RQ's callbacks (the service attaches them when it
queues the job, by the dotted names in ``aae_jobs.contract``).

- ``on_success`` (in the work horse, after the job returned): counts it ``finished``.
- ``on_failure`` (in the work horse, after the job raised): marks the failure final,
  counts it ``failed``.
- ``on_stopped`` (in the worker, after RQ stopped the job on its own request, see
  ``worker.tasks``): counts it ``stopped`` and releases its lease at once.

Each removes the job's scratch directory: it has ended and will not resume; a job that
is a sweep's point then settles its sweep if it was the last to end (``worker.sweeps``). A crash is
different: a work horse killed under a live worker runs no callback, and a job whose
worker was lost runs ``on_failure`` with ``AbandonedJobError`` (RQ's cleanup of the
started registry, see ``worker.recovery``). RQ retries both while the job has retries
left, and the next attempt resumes from the scratch directory; only a crash with no
retry left is the job's end. Callbacks log their failures instead of raising them, so
that recording an outcome cannot change it.
"""

from __future__ import annotations

import logging
import shutil
from types import TracebackType

from redis import Redis
from redis.exceptions import RedisError
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.queue import Queue
from rq.utils import now

from aae.errors import AAEError
from aae_jobs.contract import Outcome, lease_key
from worker.metrics import record_outcome
from worker.settings import get_settings
from worker.sweeps import settle
from worker.tasks import scratch_dir

logger = logging.getLogger(__name__)


def _ended(job: Job, connection: Redis, outcome: Outcome) -> None:
    model_dir = get_settings().model_dir
    shutil.rmtree(scratch_dir(model_dir, job.id), ignore_errors=True)
    device = str(job.meta.get("device") or "unknown").split(":", 1)[0]
    record_outcome(connection, outcome, device)
    sweep = job.meta.get("sweep")
    if sweep:  # RQ records this job's end after the callback: say it here
        try:
            settle(Queue(job.origin, connection=connection, serializer=job.serializer),
                   model_dir, sweep, ending={job.id: outcome.value})
        except (RedisError, AAEError, OSError) as exc:  # a maintenance pass settles it
            logger.warning("job %s: cannot settle sweep %s now: %s", job.id, sweep, exc)


def on_success(job: Job, connection: Redis, result: object) -> None:
    _ended(job, connection, Outcome.FINISHED)


def on_failure(job: Job, connection: Redis, exc_type: type[BaseException] | None,
               exc_value: BaseException | None, traceback: TracebackType | None) -> None:
    if exc_type is not None and issubclass(exc_type, AbandonedJobError):
        if job.retries_left:
            return  # a crash: RQ hands it back to the queue next, and it resumes
    else:
        # RQ's Retry retries any failure; an exception would happen again (a bad
        # dataset, a bad config), so only crashes are retried. RQ decides on the job it
        # passes here, right after this callback returns.
        job.retries_left = 0
    _ended(job, connection, Outcome.FAILED)


def on_stopped(job: Job, connection: Redis) -> None:
    job.ended_at = now()  # RQ 3.0 leaves it unset for a stopped job; it saves the job next
    try:
        job.get_meta(refresh=True)  # this process' copy predates the run
        connection.delete(lease_key(job.id))
    except RedisError as exc:
        logger.warning("job %s stopped; cannot read its meta or drop its lease: %s",
                       job.id, exc)
    _ended(job, connection, Outcome.STOPPED)
    logger.info("job %s stopped on request", job.id)
