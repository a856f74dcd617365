"""Anomaly scores: how unlike the training digits each image is (``aae.anomaly``)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response

from aae import anomaly
from aae.config import Mode
from service.core.deps import (ModelQuery, NormalizeQuery, ReturnInputQuery, VersionQuery,
                               serving)
from service.core.errors import problem_responses
from service.core.query_route import QueryOnlyRoute
from service.inference.schemas import ScoresPublic
from service.routes.inference import IMAGE_BODY, read_model_inputs, with_inputs

router = APIRouter(tags=["inference"], route_class=QueryOnlyRoute,
                   responses=problem_responses(400, 404, 409, 413, 415, 422))


@router.post("/score", response_model=ScoresPublic, openapi_extra=IMAGE_BODY,
             summary="Images -> anomaly score (reconstruction error + prior density), and "
             "whether each is an outlier by the version's calibrated threshold")
async def score(request: Request, model: ModelQuery = None, version: VersionQuery = None,
                normalize: NormalizeQuery = None, return_input: ReturnInputQuery = False
                ) -> Response:
    registry, settings = serving(request)
    loaded = await registry.get(model, version)
    x = await read_model_inputs(request, settings, normalize)
    if loaded.model.cfg.mode is Mode.SUPERVISED:  # the best class of ten: not batched
        scores = anomaly.score(loaded.model, x)
    else:
        z, y = await loaded.batchers["encode"](x)
        (x_hat,) = await loaded.batchers["decode"](z, y)
        scores = anomaly.combine(loaded.model, x, x_hat, z)
    calibration = loaded.info.metrics.get("anomaly")
    threshold = calibration["threshold"] if calibration else None
    body = {"model": loaded.name, "version": loaded.version, "threshold": threshold,
            "detail": None if calibration else (
                "this version was published before anomaly scores had a calibrated "
                "threshold: scores only, no outlier flags"),
            "scores": [{"score": s, "reconstruction_error": r, "prior_nll": p,
                        "is_outlier": None if threshold is None else s > threshold}
                       for s, r, p in zip(scores.score.tolist(),
                                          scores.reconstruction.tolist(),
                                          scores.prior_nll.tolist())]}
    return Response(orjson.dumps(with_inputs(body, x, return_input)),
                    media_type="application/json")
