"""Training jobs: submit, follow, list, cancel. Thin: parse, call the job queue, shape.

Jobs run on the workers; these routes only talk to Redis, through ``JobQueue.run``: on
threads of their own, behind a circuit breaker, so they answer 503 (with
``Retry-After``) within a second while it is down or hung, and inference and the model
routes do not notice.

``Idempotency-Key`` on ``POST /jobs/train``: the same key and body return the job the
first request made (200), the same key with another body is a 422.

``/jobs/{id}/events`` uses FastAPI's own server-sent events (``EventSourceResponse``,
FastAPI 0.135): it frames the events, sets the no-cache and no-buffering headers, and
sends a ``: ping`` comment after 15 s without an event."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
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
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
    description="any string of visible ASCII characters: a request that repeats the key "
    "and the body of an earlier one gets what that one made (200), never a second; the "
    "same key with another body is a 422. A key lives as long as its job is known; a "
    "request answered 503 made nothing, and its key is free")]


@router.post("/train", status_code=202, response_model=TrainJobPublic,
             dependencies=[RequireApiKey],
             responses={**problem_responses(401, 403),
                        200: {"description": "the job an earlier request with this "
                                             "Idempotency-Key and body made",
                              "model": TrainJobPublic}},
             summary="Queue a training run; a worker trains and publishes a version")
async def submit_train_job(params: TrainJobCreate, jobs: JobQueueDep, request: Request,
                           response: Response,
                           idempotency_key: IdempotencyKey = None) -> TrainJobPublic:
    job, made = await jobs.run(jobs.submit, params, request_id.get(), idempotency_key)
    response.headers["Location"] = str(request.app.url_path_for("get_job", job_id=job.id))
    if not made:
        response.status_code = 200
    return job


@router.get("", response_model=list[TrainJobPublic], summary="Jobs, newest first")
async def list_jobs(jobs: JobQueueDep, status: JobStatus | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[TrainJobPublic]:
    return await jobs.run(jobs.recent, status, limit)


@router.get("/{job_id}", response_model=TrainJobPublic, responses=problem_responses(404),
            summary="Status, progress, result or error of a job")
async def get_job(job_id: JobId, jobs: JobQueueDep) -> TrainJobPublic:
    return await jobs.run(jobs.get, job_id)


@router.post("/{job_id}/cancel", response_model=TrainJobPublic, dependencies=[RequireApiKey],
             responses={**problem_responses(401, 403, 404, 409),
                        202: {"description": "running: it stops at its next step and "
                                             "publishes nothing", "model": TrainJobPublic}},
             summary="Cancel a queued job, or stop a running one")
async def cancel_job(job_id: JobId, jobs: JobQueueDep, response: Response) -> TrainJobPublic:
    job = await jobs.run(jobs.cancel, job_id)
    if job.status not in ENDED:
        response.status_code = 202
    return job


async def existing_job(job_id: JobId, jobs: JobQueueDep) -> str:
    """404 or 503 before a stream starts."""
    await jobs.run(jobs.get, job_id)
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
