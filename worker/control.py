"""What a running job shares through Redis besides RQ's own records (the names and the
record are those of ``aae_jobs.contract``).

- ``job.meta`` (``JobMeta``): its stage and progress, written by the running job; the
  service reads it.
- the stop key: set by the service to cancel a job; the job looks at it between steps
  and, once set, stops at the next step boundary (see the contract's docstring for
  how RQ then records it).
- the lease: renewed by the running job every third of its time to live. A started
  job whose lease has lapsed is dead (its worker was killed or lost) and is handed
  back to the queue by ``worker.recovery``.

A running job survives short Redis outages: failing to report progress, renew its lease
or read the stop flag is logged, not raised.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Self

from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job

from aae.training import Progress
from aae_jobs.contract import JobMeta, JobProgress, lease_key, stop_key

logger = logging.getLogger(__name__)


def lease_alive(connection: Redis, job_id: str) -> bool:
    return bool(connection.exists(lease_key(job_id)))


class Lease:
    """Keeps ``aae:job:<id>:lease`` alive from a background thread while the job runs."""

    def __init__(self, connection: Redis, job_id: str, ttl_s: float) -> None:
        self.connection, self.key = connection, lease_key(job_id)
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)

    def _renew(self) -> None:
        value = f"{os.uname().nodename}:{os.getpid()}"
        while True:
            try:
                self.connection.set(self.key, value, px=self.ttl_ms)
            except RedisError as exc:
                logger.warning("cannot renew the job's lease: %s", exc)
            if self._stop.wait(self.ttl_ms / 3000):
                return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.connection.delete(self.key)
        except RedisError as exc:
            logger.warning("cannot release the job's lease: %s", exc)


class StopFlag:
    """``Trainer.should_stop``: True once the service has asked the job to stop. Redis is
    asked at most every ``interval_s`` seconds, so fast GPU steps do not wait on it."""

    def __init__(self, connection: Redis, job_id: str, interval_s: float = 0.25) -> None:
        self.connection, self.key = connection, stop_key(job_id)
        self.interval_s = interval_s
        self._checked_at = float("-inf")
        self._requested = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self._requested and now - self._checked_at >= self.interval_s:
            self._checked_at = now
            try:
                self._requested = bool(self.connection.exists(self.key))
            except RedisError as exc:
                logger.warning("cannot read the stop flag: %s", exc)
        return self._requested


class JobReport:
    """The job's meta (``JobMeta``): stage, progress, attempts and result, saved on every
    change."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def update(self, **fields: Any) -> None:
        unknown = set(fields) - set(JobMeta.model_fields)
        if unknown:
            raise ValueError(f"not fields of JobMeta: {sorted(unknown)}")
        self.job.meta.update(fields)
        try:
            self.job.save_meta()
        except RedisError as exc:
            logger.warning("cannot save the job's progress: %s", exc)

    def progress(self, progress: Progress) -> None:
        """``Trainer.on_progress``."""
        self.update(progress=JobProgress.model_validate(progress).model_dump())
