"""Training jobs: submit, follow, list, cancel. Thin: parse, call the job queue, shape.

Jobs run on the workers; these routes only talk to Redis, so they answer 503 while it
is down, and inference does not notice.

``/jobs/{id}/events`` uses FastAPI's own server-sent events (``EventSourceResponse``,
FastAPI 0.135): it frames the events, sets the no-cache and no-buffering headers, and
sends a ``: ping`` comment after 15 s without an event."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from aae_jobs.contract import ENDED, JobStatus, samples_dir
from service.core.auth import RequireApiKey
from service.core.deps import SettingsDep
from service.core.errors import JobNotFound, problem_responses
from service.core.logs import request_id
from service.jobs.queue import JobQueueDep
from service.jobs.schemas import TrainJobCreate, TrainJobPublic

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=problem_responses(422, 503))

JobId = Annotated[str, Path(description="job id", pattern=r"^[A-Za-z0-9_-]{1,64}$")]


@router.post("/train", status_code=202, response_model=TrainJobPublic,
             dependencies=[RequireApiKey], responses=problem_responses(401, 403),
             summary="Queue a training run; a worker trains and publishes a version")
def submit_train_job(params: TrainJobCreate, jobs: JobQueueDep, request: Request,
                     response: Response) -> TrainJobPublic:
    job = jobs.submit(params, request_id.get())
    response.headers["Location"] = str(request.app.url_path_for("get_job", job_id=job.id))
    return job


@router.get("", response_model=list[TrainJobPublic], summary="Jobs, newest first")
def list_jobs(jobs: JobQueueDep, status: JobStatus | None = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[TrainJobPublic]:
    return jobs.recent(status, limit)


@router.get("/{job_id}", response_model=TrainJobPublic, responses=problem_responses(404),
            summary="Status, progress, result or error of a job")
def get_job(job_id: JobId, jobs: JobQueueDep) -> TrainJobPublic:
    return jobs.get(job_id)


@router.post("/{job_id}/cancel", response_model=TrainJobPublic, dependencies=[RequireApiKey],
             responses={**problem_responses(401, 403, 404, 409),
                        202: {"description": "running: it stops at its next step and "
                                             "publishes nothing", "model": TrainJobPublic}},
             summary="Cancel a queued job, or stop a running one")
def cancel_job(job_id: JobId, jobs: JobQueueDep, response: Response) -> TrainJobPublic:
    job = jobs.cancel(job_id)
    if job.status not in ENDED:
        response.status_code = 202
    return job


async def existing_job(job_id: JobId, jobs: JobQueueDep) -> str:
    """404 or 503 before a stream starts."""
    await run_in_threadpool(jobs.get, job_id)
    return job_id


@router.get("/{job_id}/events", response_class=EventSourceResponse,
            responses={**problem_responses(404),
                       200: {"description": "server-sent events: 'job' (the job, each time "
                                            "it changes), then 'end' (the job as it ended)"}},
            summary="Follow a job's progress until it ends (server-sent events)")
async def job_events(job_id: Annotated[str, Depends(existing_job)], jobs: JobQueueDep,
                     settings: SettingsDep) -> AsyncIterable[ServerSentEvent]:
    async for job in jobs.follow(job_id, settings.job_events_poll_s):
        yield ServerSentEvent(event="end" if job.status in ENDED else "job", data=job)


@router.get("/{job_id}/samples/latest.png", response_class=FileResponse,
            responses={**problem_responses(404),
                       200: {"content": {"image/png": {}}, "description": "a PNG grid"}},
            summary="The latest grid of samples a job drew (at its last epoch's end)")
def job_samples(job_id: JobId, settings: SettingsDep) -> FileResponse:
    path = samples_dir(settings.model_dir, job_id) / "latest.png"
    if not path.is_file():  # the grids outlive the job, and need no Redis
        raise JobNotFound(f"job {job_id} has drawn no samples (yet)")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-cache"})
