"""Figures of a model version: the latent manifold, the style grid, the latent scatter,
the training curves, and interpolations. Thin: the codes come from ``aae.figures``, are
decoded in the model's batched forward passes, and leave as PNG; plots from
``service.figures.plots``. Model resolution, limits and errors are those of inference."""

from __future__ import annotations

from typing import Annotated

import orjson
import torch
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from aae import figures
from aae.errors import CapabilityError, InvalidInput
from service.core.deps import ModelQuery, NormalizeQuery, VersionQuery, serving
from service.core.errors import problem_responses
from service.core.query_route import QueryOnlyRoute
from service.figures.plots import latent_scatter, training_curves
from service.inference.inputs import read_images
from service.inference.registry import LoadedModel
from service.routes.inference import IMAGE_BODY

router = APIRouter(tags=["figures"], route_class=QueryOnlyRoute,
                   responses=problem_responses(400, 404, 409, 413, 415, 422))

PNG = {200: {"content": {"image/png": {}}, "description": "a PNG"}}
Scale = Annotated[int, Query(ge=1, le=8, description="enlarge each pixel of the PNG")]
Label = Annotated[int | None, Query(ge=0, le=99, description="decode every code with this "
                                    "class (models with a class input); default: the "
                                    "classes left open (their uniform mixture)")]


async def _png(request: Request, loaded: LoadedModel, images: torch.Tensor, scale: int,
               columns: int) -> Response:
    """The images as a PNG grid, made off the event loop when large
    (service.inference.encoding)."""
    data = await request.app.state.encoder.png(images, scale, columns)
    return Response(data, media_type="image/png",
                    headers={"X-Model": loaded.name, "X-Model-Version": str(loaded.version)})


async def _decoded(loaded: LoadedModel, codes: figures.Codes) -> torch.Tensor:
    (images,) = await loaded.batchers["decode"](*codes)
    return images


@router.get("/figures/manifold", response_class=Response, responses=PNG,
            summary="The decoder over an n x n grid of the 2-D latent space")
async def manifold(request: Request, model: ModelQuery = None, version: VersionQuery = None,
                   n: Annotated[int, Query(ge=2, le=32, description="grid size")] = 20,
                   extent: Annotated[float | None, Query(
                       gt=0, le=1000, description="the grid spans [-extent, extent] on "
                       "each axis; default: two prior standard deviations")] = None,
                   label: Label = None, scale: Scale = 1) -> Response:
    registry, _ = serving(request)
    loaded = await registry.get(model, version)
    codes = figures.manifold_codes(loaded.model, n, extent, label)
    return await _png(request, loaded, await _decoded(loaded, codes), scale, columns=n)


@router.get("/figures/styles", response_class=Response, responses=PNG,
            summary="Style grid: each row one style code z, each column one class")
async def styles(request: Request, model: ModelQuery = None, version: VersionQuery = None,
                 rows: Annotated[int, Query(ge=1, le=32, description="style codes")] = 10,
                 seed: Annotated[int, Query(ge=0, le=2**63 - 1,
                                            description="draws the style codes")] = 0,
                 scale: Scale = 1) -> Response:
    registry, _ = serving(request)
    loaded = await registry.get(model, version)
    codes = figures.style_codes(loaded.model, rows, torch.Generator().manual_seed(seed))
    columns = loaded.model.cfg.n_classes
    return await _png(request, loaded, await _decoded(loaded, codes), scale, columns=columns)


@router.post("/figures/styles", response_class=Response, responses=PNG,
             openapi_extra=IMAGE_BODY,
             summary="Style grid of uploaded images: each row one image's style code z, each "
             "column one class")
async def styles_of_images(request: Request, model: ModelQuery = None,
                           version: VersionQuery = None, scale: Scale = 1,
                           normalize: NormalizeQuery = None) -> Response:
    registry, settings = serving(request)
    loaded = await registry.get(model, version)
    x = await read_images(request, max_images=32, max_pixels=settings.max_image_pixels,
                          normalization=normalize)
    z, _ = await loaded.batchers["encode"](x)
    codes = figures.style_codes(loaded.model, z=z)
    columns = loaded.model.cfg.n_classes
    return await _png(request, loaded, await _decoded(loaded, codes), scale, columns=columns)


@router.get("/figures/latent", response_class=Response, responses=PNG,
            summary="The codes of test digits, coloured by their label (a 2-D projection "
            "for larger codes)")
async def latent(request: Request, model: ModelQuery = None,
                 version: VersionQuery = None) -> Response:
    registry, _ = serving(request)
    name, number = registry.resolve(model, version)
    sample = registry.store.extra(name, number, "latent")
    if sample is None or not sample.get("z"):
        raise CapabilityError(f"{name} version {number} was published without a sample of "
                              "encoded test digits (before figures existed); train a new "
                              "version to draw its latent scatter")
    data = await run_in_threadpool(latent_scatter, sample["z"], sample["labels"],
                                   f"{name} version {number}: test digits")
    return Response(data, media_type="image/png")


@router.get("/figures/curves", response_class=Response, responses=PNG,
            summary="Training curves: the phases' losses and validation error per epoch")
async def curves(request: Request, model: ModelQuery = None,
                 version: VersionQuery = None) -> Response:
    registry, _ = serving(request)
    name, number = registry.resolve(model, version)
    metrics = registry.store.info(name, number).metrics
    if not metrics.get("history"):
        raise CapabilityError(f"{name} version {number} has no per-epoch history in its "
                              "metrics")
    data = await run_in_threadpool(training_curves, metrics["history"],
                                   f"{name} version {number}", metrics.get("selected_epoch"))
    return Response(data, media_type="image/png")


@router.post("/interpolate", response_class=Response, responses=PNG,
             summary="The images between two codes or two images, as a PNG strip (or the "
             "codes and images as JSON with Accept: application/json)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"type": "object", "properties": {
                     "z": {"type": "array", "items": {"type": "array", "items": {
                         "type": "number"}}, "description": "two codes"},
                     "pixels": {"type": "array", "items": {}},
                     "images": {"type": "array", "items": {"type": "string"}}}}},
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "file": {"type": "array", "items": {"type": "string",
                                                         "format": "binary"}}}}}}}})
async def interpolate(request: Request, model: ModelQuery = None,
                      version: VersionQuery = None,
                      steps: Annotated[int, Query(ge=2, le=64)] = 10,
                      spherical: Annotated[bool, Query(
                          description="along the great circle (slerp) rather than the "
                          "straight line")] = False,
                      label: Label = None, scale: Scale = 1,
                      normalize: NormalizeQuery = None) -> Response:
    registry, settings = serving(request)
    loaded = await registry.get(model, version)
    body = await request.body()
    document = None
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = None  # read_images answers it with the images' own message
    if isinstance(document, dict) and "z" in document:
        z = document["z"]
        if not isinstance(z, list) or len(z) != 2:
            raise InvalidInput("z must hold exactly two codes to interpolate between")
        codes = figures.interpolation_codes(loaded.model, z[0], z[1], steps, spherical, label)
    else:
        x = await read_images(request, max_images=2, max_pixels=settings.max_image_pixels,
                              normalization=normalize)
        codes = figures.image_interpolation_codes(loaded.model, x, steps, spherical, label)
    images = await _decoded(loaded, codes)
    if "application/json" in request.headers.get("accept", ""):
        return Response(orjson.dumps({"model": loaded.name, "version": loaded.version,
                                      "z": codes[0].tolist(), "images": images.tolist()}),
                        media_type="application/json")
    return await _png(request, loaded, images, scale, columns=steps)
