"""Sweeps: many training jobs from one request, compared in one table. Thin: parse,
call ``service.jobs.sweeps``, shape. Top-level routes (``/sweeps``), so that they never
meet ``/jobs/{id}``. Events as for jobs (FastAPI's ``EventSourceResponse``); Redis is
called as for jobs (``JobQueue.run``), and so is ``Idempotency-Key``."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from service.core.auth import RequireApiKey
from service.core.deps import SettingsDep
from service.core.errors import problem_responses
from service.core.logs import request_id
from service.figures.plots import sweep_figure
from service.jobs.sweep_schemas import SweepCreate, SweepPublic, SweepSummary
from service.jobs.sweeps import SweepsDep
from service.routes.jobs import IdempotencyKey

router = APIRouter(prefix="/sweeps", tags=["sweeps"], responses=problem_responses(422, 503))

SweepId = Annotated[str, Path(description="sweep id", pattern=r"^[A-Za-z0-9_-]{1,64}$")]


@router.post("", status_code=202, response_model=SweepPublic, dependencies=[RequireApiKey],
             responses={**problem_responses(401, 403),
                        200: {"description": "the sweep an earlier request with this "
                                             "Idempotency-Key and body made",
                              "model": SweepPublic}},
             summary="Queue one training job per point of a grid or list; every point is "
                     "checked first")
async def submit_sweep(params: SweepCreate, sweeps: SweepsDep, request: Request,
                       response: Response,
                       idempotency_key: IdempotencyKey = None) -> SweepPublic:
    sweep, made = await sweeps.jobs.run(sweeps.submit, params, request_id.get(),
                                        idempotency_key)
    response.headers["Location"] = str(request.app.url_path_for("get_sweep",
                                                                sweep_id=sweep.id))
    if not made:
        response.status_code = 200
    return sweep


@router.get("", response_model=list[SweepSummary], summary="Sweeps, newest first")
async def list_sweeps(sweeps: SweepsDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
                      ) -> list[SweepSummary]:
    return await sweeps.jobs.run(sweeps.recent, limit)


@router.get("/{sweep_id}", response_model=SweepPublic, responses=problem_responses(404),
            summary="A sweep's points, best first by its metric, and their spread over seeds")
async def get_sweep(sweep_id: SweepId, sweeps: SweepsDep) -> SweepPublic:
    return await sweeps.jobs.run(sweeps.get, sweep_id)


@router.post("/{sweep_id}/cancel", response_model=SweepPublic, status_code=202,
             dependencies=[RequireApiKey], responses=problem_responses(401, 403, 404, 409),
             summary="Cancel every point not ended (running ones stop at their next step)")
async def cancel_sweep(sweep_id: SweepId, sweeps: SweepsDep) -> SweepPublic:
    return await sweeps.jobs.run(sweeps.cancel, sweep_id)


async def existing_sweep(sweep_id: SweepId, sweeps: SweepsDep) -> str:
    """404 or 503 before a stream starts."""
    await sweeps.jobs.run(sweeps.get, sweep_id)
    return sweep_id


@router.get("/{sweep_id}/events", response_class=EventSourceResponse,
            responses={**problem_responses(404),
                       200: {"description": "server-sent events: 'sweep' (the sweep, each "
                                            "time it changes), then 'end' (every point "
                                            "ended and the sweep settled)"}},
            summary="Follow a sweep until it ends (server-sent events)")
async def sweep_events(sweep_id: Annotated[str, Depends(existing_sweep)], sweeps: SweepsDep,
                       settings: SettingsDep) -> AsyncIterable[ServerSentEvent]:
    async for sweep in sweeps.follow(sweep_id, settings.job_events_poll_s):
        yield ServerSentEvent(event="end" if sweep.status == "ended" and sweep.settled
                              else "sweep", data=sweep)


@router.get("/{sweep_id}/figure.png", response_class=Response,
            responses={**problem_responses(404),
                       200: {"content": {"image/png": {}}, "description": "a PNG"}},
            summary="The points' validation curves overlaid, and the ranked table")
async def sweep_figure_png(sweep_id: SweepId, sweeps: SweepsDep) -> Response:
    def draw() -> bytes:
        record = sweeps.record(sweep_id)
        return sweep_figure(sweeps.ranked(record), record.rank_by,
                            f"sweep {sweep_id[:8]} of {record.name}")
    png = await sweeps.jobs.run(draw)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})
