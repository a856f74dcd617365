"""Fixtures of the worker tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rq import Callback, Queue, Retry
from rq.job import Job

from aae.config import AAEConfig
from aae_jobs.contract import ON_FAILURE, ON_STOPPED, ON_SUCCESS, TRAIN_TASK


def _enqueue_train(queue: Queue, name: str, cfg: AAEConfig, dataset: str = "mnist",
                   job_id: str | None = None, retries: int = 2) -> Job:
    """As the service enqueues (``service.jobs.queue.JobQueue.submit``): by dotted name, JSON
    arguments, the outcome callbacks, retried after crashes."""
    return queue.enqueue(TRAIN_TASK, kwargs={"name": name, "config": cfg.to_dict(),
                                             "dataset": dataset},
                         job_id=job_id, retry=Retry(max=retries), job_timeout=600,
                         on_success=Callback(ON_SUCCESS), on_failure=Callback(ON_FAILURE),
                         on_stopped=Callback(ON_STOPPED))


@pytest.fixture(scope="session")
def enqueue_train() -> Callable[..., Any]:
    """``enqueue_train(queue, name, cfg, dataset="mnist", job_id=None, retries=2)``."""
    return _enqueue_train
