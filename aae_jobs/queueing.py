"""How a job's durable record becomes an RQ job: the one place, used by the API when it
accepts a job (``service.jobs.queue``) and by the workers when they queue a job Redis lost
(``worker.recovery``), so that a job queued again is the job the API queued."""

from __future__ import annotations

from rq import Callback, Queue, Retry
from rq.job import Job

from aae_jobs.contract import ON_FAILURE, ON_STOPPED, ON_SUCCESS, TRAIN_TASK, JobMeta
from aae_jobs.records import JobRecord


def failure_reason(job: Job) -> str:
    """Why a failed job failed: the last line of the failure RQ recorded (the exception
    and its message)."""
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "the job failed"


def enqueue(queue: Queue, record: JobRecord) -> Job:
    """Queue ``record``'s training job under its id, with the outcome callbacks."""
    meta = JobMeta(dataset_checked=record.dataset_checked, sweep=record.sweep,
                   request_id=record.request_id)
    return queue.enqueue(
        TRAIN_TASK, job_id=record.id,
        kwargs={"name": record.name, "config": record.config, "dataset": record.dataset},
        job_timeout=record.job_timeout_s, result_ttl=record.result_ttl_s,
        failure_ttl=record.result_ttl_s,
        retry=Retry(max=record.retries) if record.retries else None,
        on_success=Callback(ON_SUCCESS), on_failure=Callback(ON_FAILURE),
        on_stopped=Callback(ON_STOPPED),
        meta=meta.model_dump(include={"dataset_checked", "sweep", "request_id"},
                             exclude_none=True),
        description=record.description)
