"""An outcome callback for the finish/requeue race: it holds the work horse between the
job's return and RQ recording its success (loaded by the worker processes by name,
``tests.worker.slow_outcomes.on_success``)."""

from __future__ import annotations

import time

from redis import Redis
from rq.job import Job

from worker import outcomes

HOLD_S = 4.0  # longer than the lease of the test (1 s) and several maintenance passes


def on_success(job: Job, connection: Redis, result: object) -> None:
    time.sleep(HOLD_S)
    outcomes.on_success(job, connection, result)
