"""How the API calls Redis without ever waiting long on it: short socket timeouts (the
client, ``JobQueue.connect``), a circuit breaker, and threads of its own.

- ``Breaker``: after a call fails because Redis did not answer (a refused connection, a
  timeout: a Redis that is down, paused or swamped), the breaker opens for ``open_s``:
  every call fails at once with ``QueueUnavailable`` (503 with ``Retry-After``) without
  touching Redis. Then one call at a time is let through; its success closes the
  breaker, its failure opens it again. A Redis that answers with an error (a bad
  command) is up: that does not open it.
- ``Calls.run``: runs a blocking call that talks to Redis on the job routes' own threads
  (an AnyIO ``CapacityLimiter`` of ``threads``), never on the thread pool that the model
  routes and the rest of the API share, so that a hung Redis cannot hold the threads they
  need. A call that finds every job thread busy for ``wait_s`` is answered 503 as well.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import anyio
from anyio import to_thread
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.core.errors import QueueUnavailable

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

UNREACHABLE = (RedisConnectionError, RedisTimeoutError)


class Breaker:
    """A circuit breaker over one Redis (see the module's docstring). Thread-safe."""

    def __init__(self, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.open_s, self.clock = open_s, clock
        self._lock = threading.Lock()
        self._open_until = 0.0  # closed while in the past
        self._probing = False  # half-open: one call is finding out

    @property
    def is_open(self) -> bool:
        return self.clock() < self._open_until

    def retry_after_s(self) -> int:
        return max(1, math.ceil(self._open_until - self.clock()))

    def admit(self) -> None:
        """Raise ``QueueUnavailable`` unless a call may go to Redis now."""
        with self._lock:
            if self._open_until == 0.0:
                return
            now = self.clock()
            if now < self._open_until or self._probing:
                raise QueueUnavailable(
                    "the job queue (Redis) did not answer a moment ago; training jobs are "
                    "unavailable until it does (inference endpoints still serve the "
                    "published models)", retry_after_s=self.retry_after_s())
            self._probing = True

    def succeeded(self) -> None:
        with self._lock:
            if self._open_until:
                logger.info("the job queue (Redis) answers again")
            self._open_until, self._probing = 0.0, False

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            if not self.is_open:
                logger.error("the job queue (Redis) is unreachable (%s): job routes answer "
                             "503 for %.1f s", exc, self.open_s)
            self._open_until, self._probing = self.clock() + self.open_s, False

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Around calls to Redis: admitted or 503; an unreachable Redis opens the breaker
        and is answered 503."""
        self.admit()
        try:
            yield
        except UNREACHABLE as exc:
            self.failed(exc)
            raise QueueUnavailable(
                "training jobs are unavailable: the job queue (Redis) cannot be reached; "
                "inference endpoints still serve the published models",
                retry_after_s=self.retry_after_s()) from exc
        except BaseException:
            with self._lock:
                self._probing = False
            raise
        self.succeeded()


class Calls:
    """The job routes' calls to Redis: behind ``breaker``, on ``threads`` threads of
    their own, waiting at most ``wait_s`` for one."""

    def __init__(self, breaker: Breaker, threads: int, wait_s: float) -> None:
        self.breaker, self.wait_s = breaker, wait_s
        self.slots = anyio.CapacityLimiter(threads)  # taken here, with a deadline
        self.threads = anyio.CapacityLimiter(threads)  # never short: slots come first

    async def run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self.breaker.is_open:  # known down: answered on the event loop, no thread
            self.breaker.admit()
        acquired = False
        with anyio.move_on_after(self.wait_s):
            await self.slots.acquire()
            acquired = True
        if not acquired:
            raise QueueUnavailable(f"every job thread has been busy for {self.wait_s:g} s "
                                   "(the job queue is slow); try again", retry_after_s=1)
        try:
            return await to_thread.run_sync(self._guarded, call, args, kwargs,
                                            limiter=self.threads)
        finally:
            self.slots.release()

    def _guarded(self, call: Callable[..., T], args: tuple, kwargs: dict) -> T:
        with self.breaker.guard():
            return call(*args, **kwargs)

