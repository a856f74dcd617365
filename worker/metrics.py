"""Worker metrics, kept in Redis: the API exposes them to Prometheus when it is scraped
(``service/job_metrics.py``, which reads the same keys).

Jobs run in forked processes that come and go, so nothing is held in a process: every
count is added to a Redis hash at once, and survives the worker.

- ``aae:metrics:jobs``: ``<outcome>|<device>`` -> jobs that ended so (``finished``,
  ``failed``, ``stopped``).
- ``aae:metrics:steps``: ``<device>|count`` and ``<device>|seconds``: training steps
  done and the wall-clock time they took (data, forward, backward, optimizer).

Failing to record is logged, never raised: metrics must not fail a training job.
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from redis.exceptions import RedisError

from aae.training import Progress

logger = logging.getLogger(__name__)

JOBS_KEY = "aae:metrics:jobs"
STEPS_KEY = "aae:metrics:steps"


def record_outcome(connection: Redis, outcome: str, device: str) -> None:
    try:
        connection.hincrby(JOBS_KEY, f"{outcome}|{device}", 1)
    except RedisError as exc:
        logger.warning("cannot record the job's outcome: %s", exc)


class StepTimer:
    """``Trainer.on_progress``: adds the steps between two step reports, and the time
    they took, to ``aae:metrics:steps``. The first report of a run (or of a resumed run)
    and each epoch's end (after validation, which is not a step) only restart the
    clock."""

    def __init__(self, connection: Redis, device: str) -> None:
        self.connection, self.device = connection, device
        self._last: tuple[int, float] | None = None

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        last, self._last = self._last, (progress.step, now)
        if last is None or progress.event != "step" or progress.step <= last[0]:
            return
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                pipe.hincrby(STEPS_KEY, f"{self.device}|count", progress.step - last[0])
                pipe.hincrbyfloat(STEPS_KEY, f"{self.device}|seconds", now - last[1])
                pipe.execute()
        except RedisError as exc:
            logger.warning("cannot record the step time: %s", exc)
