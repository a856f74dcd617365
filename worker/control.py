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

A running job rides out Redis outages of any length, and trains on at full speed through
them: it talks to Redis on a client of its own whose commands wait at most
``AAE_JOB_REDIS_TIMEOUT_S`` (``control_connection``), and never from its training loop.
The stop flag is read by a thread of its own (``StopFlag``), the progress and the step
counts are sent by another (``Courier``, which keeps the newest of each and sends it
when Redis answers), the lease is renewed by a third. Failing to do any of these is
logged, not raised; the job confirms its fence, waiting for Redis, before it publishes
and before it returns, and by then has sent everything it reported.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
import uuid
from typing import Any

from collections.abc import Callable

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from rq.job import Job

from aae.training import Progress
from aae_jobs.contract import (STOP_TTL_S, JobMeta, JobProgress, attempts_key, fence_key,
                               lapse_key, lease_key, starts_key, stop_key)

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


def count_start(connection: Redis, job_id: str) -> int:
    """Count an attempt's start (waiting for Redis); returns the attempt's number."""
    def count() -> int:
        with connection.pipeline() as pipe:
            pipe.incr(attempts_key(job_id))
            pipe.expire(attempts_key(job_id), STOP_TTL_S)
            return int(pipe.execute()[0])
    return _retry(count, f"job {job_id}: counting its start")


def control_connection(connection: Redis, timeout_s: float) -> Redis:
    """A client of ``connection``'s Redis whose commands wait at most ``timeout_s`` and
    are not retried (the callers retry, or report later)."""
    pool = connection.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": timeout_s,
              "socket_connect_timeout": timeout_s, "retry": Retry(NoBackoff(), 0)}
    return Redis(connection_pool=type(pool)(connection_class=pool.connection_class,
                                            **kwargs))


class _Outage:
    """Logs an outage's first failure and its end, not every failure in between."""

    def __init__(self, what: str) -> None:
        self.what, self.since = what, None

    def failed(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            logger.warning("cannot %s, Redis unavailable (%s): trying again meanwhile",
                           self.what, exc)

    def answered(self) -> None:
        if self.since is not None:
            logger.info("can %s again after %.1f s", self.what, time.monotonic() - self.since)
            self.since = None


class Fence:
    """This attempt's token in ``fence_key(job_id)``. ``superseded`` turns true the first
    time Redis shows another token."""

    def __init__(self, connection: Redis, job: Job, token: str) -> None:
        self.connection, self.job_id, self.token = connection, job.id, token
        self.keys = [fence_key(job.id), job.key]
        self.superseded = False
        self.confirmed_at = float("-inf")  # when Redis last showed this attempt's token

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
        self.confirmed_at = time.monotonic()

    def confirmed_within(self, seconds: float) -> bool:
        """Whether Redis showed this attempt's token less than ``seconds`` ago (the lease
        and the reports confirm it all the time). No other attempt can start within a
        lease of the last confirmation: the lease set with it lasts a lease, and is then
        missed for a whole lease before the job is handed back (``worker.recovery``)."""
        if self.superseded:
            raise Superseded(f"job {self.job_id}: another attempt holds its fence")
        return time.monotonic() - self.confirmed_at < seconds

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
    """``Trainer.should_stop``: True once the service has asked the job to stop. A thread
    of its own asks Redis every ``interval_s`` seconds (``start``), so that the training
    loop only reads a flag, whatever Redis does."""

    def __init__(self, fence: Fence, interval_s: float = 0.25) -> None:
        self.fence = fence
        self.connection, self.key = fence.connection, stop_key(fence.job_id)
        self.interval_s = interval_s
        self._requested = threading.Event()
        self._outage = _Outage("read the stop flag")
        self._thread = threading.Thread(target=contextvars.copy_context().run,
                                        args=(self._poll,), name="stop-flag", daemon=True)

    def start(self) -> StopFlag:
        """Read the flag once now (a job cancelled before it started stops before it
        loads anything), then keep reading it from the thread."""
        self._read()
        self._thread.start()
        return self

    def _read(self) -> None:
        try:
            if self.connection.exists(self.key):
                self._requested.set()
            self._outage.answered()
        except RedisError as exc:
            self._outage.failed(exc)

    def _poll(self) -> None:
        while not self._requested.is_set() and not self.fence.superseded:
            time.sleep(self.interval_s)
            self._read()

    def __call__(self) -> bool:
        if self.fence.superseded:  # seen by the lease: stop computing, at once
            raise Superseded(f"job {self.fence.job_id}: another attempt holds its fence")
        return self._requested.is_set()


class Courier:
    """Sends a running job's reports to Redis from a thread of its own: ``send(kind,
    call)`` keeps the newest call of each kind, and the thread makes them; one that
    fails (Redis unavailable) is kept, unless a newer one of its kind replaced it, and
    made again after ``retry_s``. ``drain`` waits until everything sent was made."""

    def __init__(self, retry_s: float = 0.5) -> None:
        self.retry_s = retry_s
        self._pending: dict[str, Callable[[], None]] = {}
        self._busy = False
        self._superseded = False
        self._cond = threading.Condition()
        self._outage = _Outage("report the job's progress")
        self._thread = threading.Thread(target=contextvars.copy_context().run,
                                        args=(self._run,), name="courier", daemon=True)
        self._thread.start()

    def send(self, kind: str, call: Callable[[], None]) -> None:
        with self._cond:
            self._pending[kind] = call
            self._cond.notify_all()

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until every call sent has been made (or the attempt was superseded);
        False if ``timeout_s`` passed first."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._superseded or (not self._pending and not self._busy), timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending))
                batch, self._pending, self._busy = self._pending, {}, True
            failed = {}
            for kind, call in batch.items():
                try:
                    call()
                except Superseded:
                    with self._cond:
                        self._superseded, self._busy = True, False
                        self._cond.notify_all()
                    return
                except RedisError as exc:
                    self._outage.failed(exc)
                    failed[kind] = call
            if not failed:
                self._outage.answered()
            with self._cond:
                for kind, call in failed.items():
                    self._pending.setdefault(kind, call)
                self._busy = False
                self._cond.notify_all()
            if failed:
                time.sleep(self.retry_s)


class JobReport:
    """The job's meta (``JobMeta``): stage, progress, attempts and result, saved under the
    fence on every change by the courier, off the caller's thread (a change Redis cannot
    take now is sent with the next one)."""

    def __init__(self, job: Job, fence: Fence, courier: Courier) -> None:
        self.job, self.fence, self.courier = job, fence, courier
        self._meta_lock = threading.Lock()  # the meta is changed here, read by the courier
        self._send_lock = threading.Lock()  # one write at a time: the last is the newest

    def update(self, send: bool = True, **fields: Any) -> None:
        unknown = set(fields) - set(JobMeta.model_fields)
        if unknown:
            raise ValueError(f"not fields of JobMeta: {sorted(unknown)}")
        with self._meta_lock:
            self.job.meta.update(fields)
        if send:
            self.courier.send("meta", self.save)

    def save(self) -> None:
        """Write the meta as it is now, under the fence; raises Superseded or RedisError."""
        with self._send_lock:
            with self._meta_lock:
                payload = self.job.serializer.dumps(self.job.meta)
            self.fence.run(_HSET, [], "meta", payload)

    def flush(self) -> None:
        """Everything sent, then ``save``, waiting for Redis as long as it takes."""
        self.courier.drain()
        if self.fence.superseded:
            raise Superseded(f"job {self.job.id}: another attempt holds its fence")
        _retry(self.save, f"job {self.job.id}: reporting")

    def progress(self, progress: Progress) -> None:
        """``Trainer.on_progress``."""
        self.update(progress=JobProgress.model_validate(progress).model_dump())
