"""What a running job shares through Redis besides RQ's own records (the names and the
record are those of ``aae_jobs.contract``), and the fence that keeps one attempt's work.

- the fence: each attempt of a job takes it (``Fence.take``) with a token of its own.
  Only the attempt whose token is there may renew the lease, save state, report and
  publish: each of these checks the token in the same Redis command (a Lua script) or
  just before. An attempt that finds another token was superseded (it was cut off for
  a whole lease and the job was handed to another worker): it raises ``Superseded``
  and its process exits without a word to RQ, leaving no trace.
- ``job.meta`` (``JobMeta``): its stage and progress, written by the running job under
  the fence; the service reads it.
- the stop key: set by the service to cancel a job; the job looks at it between steps
  and, once set, stops at the next step boundary (see the contract's docstring for
  how RQ then records it).
- the lease: renewed by the running job every third of its time to live, for as long
  as its process lives (so also while RQ records its end: a job that has returned is
  never taken for dead). A started job whose lease stays away for a whole lease is
  dead (its worker was killed or lost) and is handed back to the queue by
  ``worker.recovery``.

A running job rides out Redis outages of any length: failing to report progress, renew
its lease or read the stop flag is logged, not raised; it confirms its fence, waiting
for Redis, before it publishes and before it returns.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
import uuid
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job

from aae.training import Progress
from aae_jobs.contract import (STOP_TTL_S, JobMeta, JobProgress, fence_key, lapse_key,
                               lease_key, starts_key, stop_key)

logger = logging.getLogger(__name__)

# KEYS[1] the fence, KEYS[2] the job: true while the fence holds ARGV[1] (taken again if
# Redis lost it) and Redis knows the job (one it lost is queued again from its record)
_HOLDS = """
if redis.call('exists', KEYS[2]) == 0 then return 0 end
local held = redis.call('get', KEYS[1])
if held == false then redis.call('set', KEYS[1], ARGV[1], 'ex', ARGV[2])
elseif held ~= ARGV[1] then return 0 end
"""
# then the lease KEYS[3] for ARGV[3] ms, its lapse mark KEYS[4] cleared
_RENEW = _HOLDS + """
redis.call('set', KEYS[3], ARGV[1], 'px', ARGV[3])
redis.call('del', KEYS[4])
return 1
"""
# then field ARGV[3] of the job's hash set to ARGV[4]
_HSET = _HOLDS + """
redis.call('hset', KEYS[2], ARGV[3], ARGV[4])
return 1
"""
_CHECK = _HOLDS + "return 1"
# then ARGV[1] appended to the list KEYS[3]
_RPUSH = _HOLDS + """
redis.call('rpush', KEYS[3], ARGV[1])
redis.call('expire', KEYS[3], ARGV[2])
return 1
"""


class Superseded(Exception):
    """Another attempt of this job holds its fence: this one must leave no trace."""


def lease_alive(connection: Redis, job_id: str) -> bool:
    return bool(connection.exists(lease_key(job_id)))


class Fence:
    """This attempt's token in ``fence_key(job_id)``. ``superseded`` turns true the first
    time Redis shows another token."""

    def __init__(self, connection: Redis, job: Job, token: str) -> None:
        self.connection, self.job_id, self.token = connection, job.id, token
        self.keys = [fence_key(job.id), job.key]
        self.superseded = False

    @classmethod
    def take(cls, connection: Redis, job: Job, attempt: int) -> Fence:
        """Take the fence for a new attempt (waiting for Redis): every older attempt
        is superseded from now on."""
        fence = cls(connection, job, f"{attempt}:{os.getpid()}:{uuid.uuid4().hex[:12]}")
        _retry(lambda: connection.set(fence.keys[0], fence.token, ex=STOP_TTL_S),
               f"job {job.id}: taking its fence")
        return fence

    def run(self, script: str, keys: list[str], *args: Any) -> None:
        """Run ``script`` under the fence (``keys`` are its KEYS[3:]); raises Superseded,
        or RedisError."""
        held = self.connection.eval(script, 2 + len(keys), *self.keys, *keys, self.token,
                                    STOP_TTL_S, *args)
        if not held:
            self.superseded = True
        if self.superseded:
            raise Superseded(f"job {self.job_id}: another attempt holds its fence")

    def check(self) -> None:
        self.run(_CHECK, [])

    def confirm(self, what: str) -> None:
        """``check``, waiting for Redis as long as it takes."""
        _retry(self.check, f"job {self.job_id}: {what}")

    def record_start(self) -> None:
        """Count this attempt's start of training in ``starts_key`` (waiting for Redis)."""
        _retry(lambda: self.run(_RPUSH, [starts_key(self.job_id)]),
               f"job {self.job_id}: recording its start")


def _retry(call: Any, what: str, cap_s: float = 5.0) -> Any:
    """``call()`` until Redis answers, with backoff; Superseded passes through."""
    delay = 0.1
    while True:
        try:
            return call()
        except RedisError as exc:
            logger.warning("%s: Redis unavailable (%s), retrying in %.1f s", what, exc, delay)
            time.sleep(delay)
            delay = min(cap_s, delay * 2)


class Lease:
    """Keeps ``aae:job:<id>:lease`` alive from a background thread, under the fence, until
    the process exits (or the fence is lost)."""

    def __init__(self, fence: Fence, ttl_s: float) -> None:
        self.fence = fence
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.keys = [lease_key(fence.job_id), lapse_key(fence.job_id)]
        # in a copy of the starter's context: its lines carry the job's id too
        self._thread = threading.Thread(target=contextvars.copy_context().run,
                                        args=(self._renew,), name="lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _renew(self) -> None:
        while True:
            try:
                self.fence.run(_RENEW, self.keys, self.ttl_ms)
            except Superseded:
                logger.warning("job %s: superseded by another attempt; its lease is theirs",
                               self.fence.job_id)
                return
            except RedisError as exc:
                logger.warning("cannot renew the job's lease: %s", exc)
            time.sleep(self.ttl_ms / 3000)


class StopFlag:
    """``Trainer.should_stop``: True once the service has asked the job to stop. Redis is
    asked at most every ``interval_s`` seconds, so fast GPU steps do not wait on it."""

    def __init__(self, fence: Fence, interval_s: float = 0.25) -> None:
        self.fence = fence
        self.connection, self.key = fence.connection, stop_key(fence.job_id)
        self.interval_s = interval_s
        self._checked_at = float("-inf")
        self._requested = False

    def __call__(self) -> bool:
        if self.fence.superseded:  # seen by the lease: stop computing, at once
            raise Superseded(f"job {self.fence.job_id}: another attempt holds its fence")
        now = time.monotonic()
        if not self._requested and now - self._checked_at >= self.interval_s:
            self._checked_at = now
            try:
                self._requested = bool(self.connection.exists(self.key))
            except RedisError as exc:
                logger.warning("cannot read the stop flag: %s", exc)
        return self._requested


class JobReport:
    """The job's meta (``JobMeta``): stage, progress, attempts and result, saved under the
    fence on every change (a change Redis cannot take now is sent with the next one)."""

    def __init__(self, job: Job, fence: Fence) -> None:
        self.job, self.fence = job, fence

    def update(self, **fields: Any) -> None:
        unknown = set(fields) - set(JobMeta.model_fields)
        if unknown:
            raise ValueError(f"not fields of JobMeta: {sorted(unknown)}")
        self.job.meta.update(fields)
        try:
            self.save()
        except RedisError as exc:
            logger.warning("cannot save the job's progress: %s", exc)

    def save(self) -> None:
        """Write the meta under the fence; raises Superseded or RedisError."""
        self.fence.run(_HSET, [], "meta", self.job.serializer.dumps(self.job.meta))

    def flush(self) -> None:
        """``save``, waiting for Redis as long as it takes."""
        _retry(self.save, f"job {self.job.id}: reporting")

    def progress(self, progress: Progress) -> None:
        """``Trainer.on_progress``."""
        self.update(progress=JobProgress.model_validate(progress).model_dump())
