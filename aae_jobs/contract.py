"""The contract between the API and the training workers: the names they meet under in
Redis, the job's statuses, and the record a running job keeps in ``job.meta``.

The API enqueues ``TRAIN_TASK`` by its dotted name, with JSON keyword arguments
(``name``, ``config``, ``dataset``) and the three outcome callbacks below; a worker runs
it. Everything else they share is listed here:

- ``stop_key(id)``: set by the API to cancel a job; read by the job between two steps.
- ``fence_key(id)``: the token of the job's current attempt, set by each attempt as it
  starts. Only the attempt holding it may renew the lease, save state, report and
  publish; an attempt that finds another token there was superseded and vanishes.
- ``lease_key(id)``: renewed (under the fence) by a running job for as long as its
  process lives; a started job whose lease stays away for a whole lease is dead and is
  handed back to the queue (``worker.recovery``). ``lapse_key(id)`` marks when a worker
  first saw it missing; a renewal clears it.
- ``starts_key(id)``: one entry per attempt that began training (its token).
- ``attempts_key(id)``: a counter of the attempts that started, by the attempts
  themselves (``JobMeta.attempts`` is its value); ``kills_key(id)``: of the attempts
  whose process the system killed, by their worker (``worker.runner``).
- ``datasets_key(queue)``: the datasets the queue's workers have, announced by each
  worker with every heartbeat (member: dataset name, score: when the announcement
  lapses). The API refuses a job for a dataset no live worker has announced.
- ``JOBS_METRICS_KEY``, ``STEPS_METRICS_KEY``: the workers' counters (``worker.metrics``
  writes them, ``service.jobs.metrics`` exposes them).
- ``JobMeta``: the job's ``meta``; ``JobProgress`` is its progress record, also served
  by ``GET /jobs/{id}`` and exported to Prometheus.

Stopping a running job
----------------------
The API only sets ``stop_key``; the job reads it between two training steps (at most
every quarter second) and, once it is set, hands the stop to RQ with RQ's own
``send_stop_job_command``. Its worker then kills the work horse and records the job as
RQ's ``stopped`` (never retried, in the failed registry), and runs ``ON_STOPPED``. So
the API reads the status as RQ wrote it, with no translation.

Why the flag decides and not the API's own ``send_stop_job_command``: that command is
a pub/sub message to the worker that took the job, delivered once or never. It is lost
while that worker's connection to Redis is down, when the worker process died while
its job runs on, and for a job cancelled between being taken and starting; and it kills
the horse wherever it is, also in the middle of publishing, so "stopped" could not
promise "nothing published". The flag is a key with a month's TTL: a job that cannot
reach Redis for a moment reads it at the next try, a job handed back to the queue after
a crash reads it when it starts again, and it is read only between steps, never while
publishing. The stop command is sent by the job itself, so it reaches the right
worker at a step boundary; if no worker acts on it (its worker is gone), the job fails
after ``STOP_GRACE_S`` with ``TrainingStopped`` as its error.

Outcomes are recorded by RQ callbacks, in the worker: ``ON_SUCCESS`` and ``ON_FAILURE``
run in the work horse when the job returns or raises, ``ON_STOPPED`` in the worker after
a stop, and ``ON_FAILURE`` also when RQ cleans up a job whose worker was lost
(``AbandonedJobError``). RQ retries crashes while the job has retries left, and
``ON_FAILURE`` is where an exception is marked final, since RQ's ``Retry`` cannot tell
an exception from a crash (``worker.outcomes``).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

TRAIN_TASK = "worker.tasks.train"
ON_SUCCESS = "worker.outcomes.on_success"
ON_FAILURE = "worker.outcomes.on_failure"
ON_STOPPED = "worker.outcomes.on_stopped"

STOP_TTL_S = 30 * 24 * 3600  # a cancel outlives any job (its result stays a week)
STOP_GRACE_S = 30.0  # how long a stopping job waits for its worker to end it

JOBS_METRICS_KEY = "aae:metrics:jobs"  # "<outcome>|<device>" -> jobs ended so
STEPS_METRICS_KEY = "aae:metrics:steps"  # "<device>|count", "<device>|seconds"


SAMPLES_DIR = ".samples"  # under the checkpoint store's root, one directory per job


def samples_dir(model_dir: Path, job_id: str) -> Path:
    """Where a job's sample grids live (``worker.samples``), readable by the API."""
    return Path(model_dir) / SAMPLES_DIR / job_id


def stop_key(job_id: str) -> str:
    return f"aae:job:{job_id}:stop"


def lease_key(job_id: str) -> str:
    return f"aae:job:{job_id}:lease"


def fence_key(job_id: str) -> str:
    return f"aae:job:{job_id}:fence"


def lapse_key(job_id: str) -> str:
    return f"aae:job:{job_id}:lapse"


def starts_key(job_id: str) -> str:
    return f"aae:job:{job_id}:starts"


def attempts_key(job_id: str) -> str:
    return f"aae:job:{job_id}:attempts"


def kills_key(job_id: str) -> str:
    return f"aae:job:{job_id}:kills"


def restore_lock(job_id: str) -> str:
    return f"aae:job:{job_id}:restore"


def datasets_key(queue: str) -> str:
    return f"aae:queue:{queue}:datasets"


class JobStatus(str, Enum):
    """A job's status, as RQ records it (RQ's deferred, scheduled and created read as
    queued)."""

    QUEUED = "queued"  # waiting for a worker (again, after a crash)
    STARTED = "started"  # a worker is running it
    FINISHED = "finished"  # trained and published: see ``result``
    FAILED = "failed"  # see ``error``
    CANCELED = "canceled"  # cancelled before it started
    STOPPED = "stopped"  # cancelled while running: stopped between two steps, nothing published


ENDED = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED})


class Outcome(str, Enum):
    """How a worker's job ended, as counted in ``JOBS_METRICS_KEY``."""

    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"


class Stage(str, Enum):
    """What a started job is doing (``JobMeta.stage``)."""

    STARTING = "starting"
    LOADING_DATA = "loading data"
    BUILDING = "building"  # the model, its optimizers, a saved state loaded
    TRAINING = "training"  # and evaluating, at each epoch's end and the last
    PUBLISHING = "publishing"
    FINISHED = "finished"
    STOPPED = "stopped"


class JobProgress(BaseModel):
    """Where a running job is. The worker builds it from the trainer's
    ``aae.training.Progress`` (by attribute), every ``AAE_PROGRESS_EVERY`` steps and at
    each epoch's end."""

    model_config = ConfigDict(from_attributes=True)

    epoch: int = Field(description="the epoch being trained (1-based), or just ended")
    epochs: int
    step: int = Field(description="steps done")
    total_steps: int
    losses: dict[str, float] = Field(description="latest loss of each training phase")
    validation_error: float | None = Field(None, description="at the last epoch's end, "
                                           "for models that classify")
    validation_loss: float | None = None
    elapsed_s: float
    eta_s: float | None


class JobResult(BaseModel):
    model: str
    version: int = Field(description="the version this job published")


class JobMeta(BaseModel):
    """A job's ``job.meta``: ``dataset_checked`` is written by the API when it queues
    the job, the rest by the running job (``worker.control.JobReport``)."""

    model_config = ConfigDict(extra="ignore")

    dataset_checked: bool = False
    sweep: str | None = None  # the sweep this job is a point of (API, at submit)
    request_id: str | None = None  # of the request that queued it (API, at submit)
    stage: str | None = None  # a Stage's value
    progress: JobProgress | None = None
    attempts: int = 0
    worker: str | None = None
    pid: int | None = None
    device: str | None = None
    resumed_from_epoch: int | None = None
    checkpoint_epoch: int | None = None
    sample_epoch: int | None = None  # epoch of the latest sample grid (worker.samples)
    result: JobResult | None = None
