"""Worker metrics, kept in Redis: the API exposes them to Prometheus when it is scraped
(``service/jobs/metrics.py``; the keys are ``aae_jobs.contract``'s).

Jobs run in forked processes that come and go, so nothing is held in a process: every
count is added to a Redis hash at once, and survives the worker.

- ``JOBS_METRICS_KEY``: ``<outcome>|<device>`` -> jobs that ended so (``finished``,
  ``failed``, ``stopped``), recorded by the outcome callbacks (``worker.outcomes``).
- ``STEPS_METRICS_KEY``: ``<device>|count`` and ``<device>|seconds``: training steps
  done and the wall-clock time they took (data, forward, backward, optimizer).

Failing to record is logged, never raised: metrics must not fail a training job.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from redis import Redis
from redis.exceptions import RedisError

from aae.training import Progress
from aae_jobs.contract import JOBS_METRICS_KEY, STEPS_METRICS_KEY, Outcome

if TYPE_CHECKING:
    from worker.control import Courier

logger = logging.getLogger(__name__)


def record_outcome(connection: Redis, outcome: Outcome, device: str) -> None:
    try:
        connection.hincrby(JOBS_METRICS_KEY, f"{outcome.value}|{device}", 1)
    except RedisError as exc:
        logger.warning("cannot record the job's outcome: %s", exc)


class StepTimer:
    """``Trainer.on_progress``: adds the steps between two step reports, and the time
    they took, to ``STEPS_METRICS_KEY``. ``start`` sets the clock just before the
    trainer's first step, so a run's first steps are counted too.

    An epoch's report comes after its validation, which is not a step: it only restarts
    the clock. So the steps of an epoch after its last step report (fewer than
    ``progress_every``; none when it divides the steps per epoch) are not counted: the
    count is of the steps timed, not of every step.

    With a ``courier`` (``worker.control.Courier``) the counts are added from its thread,
    never the training loop's: those Redis cannot take now are added with the next ones."""

    def __init__(self, connection: Redis, device: str, courier: Courier | None = None) -> None:
        self.connection, self.device, self.courier = connection, device, courier
        self._last: tuple[int, float] | None = None
        self._lock = threading.Lock()
        self._unsent = (0, 0.0)  # steps and seconds not yet added

    def start(self, step: int) -> None:
        """Training (re)starts after ``step`` steps."""
        self._last = (step, time.monotonic())

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        last, self._last = self._last, (progress.step, now)
        if last is None or progress.event != "step" or progress.step <= last[0]:
            return
        with self._lock:
            steps, seconds = self._unsent
            self._unsent = (steps + progress.step - last[0], seconds + now - last[1])
        if self.courier is not None:
            self.courier.send("steps", self._add)
            return
        try:
            self._add()
        except RedisError as exc:
            logger.warning("cannot record the step time: %s", exc)

    def _add(self) -> None:
        """Add the unsent steps to Redis; raises RedisError (and keeps them unsent)."""
        with self._lock:
            (steps, seconds), self._unsent = self._unsent, (0, 0.0)
        if not steps:
            return
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                pipe.hincrby(STEPS_METRICS_KEY, f"{self.device}|count", steps)
                pipe.hincrbyfloat(STEPS_METRICS_KEY, f"{self.device}|seconds", seconds)
                pipe.execute()
        except RedisError:
            with self._lock:
                more_steps, more_seconds = self._unsent
                self._unsent = (steps + more_steps, seconds + more_seconds)
            raise
