"""Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.core.metrics import exposition

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}},
                             "description": "Prometheus text exposition format"}},
            summary="Metrics of the API, the inference and the training jobs")
def metrics(request: Request) -> Response:  # sync: it reads files and Redis
    body, content_type = exposition(getattr(request.app.state, "metric_collectors", ()))
    return Response(body, media_type=content_type)
