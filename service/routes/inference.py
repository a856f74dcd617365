"""Inference: encode, classify, reconstruct, decode, sample. Thin: parse, batch, shape."""

from __future__ import annotations

from typing import Annotated

import orjson
import torch
from fastapi import APIRouter, Depends, Query, Request, Response

from aae.errors import CapabilityError, InvalidInput
from aae.inputs import codes
from service.core.deps import (ModelQuery, NormalizeQuery, ReturnInputQuery, VersionQuery,
                               serving)
from service.core.errors import PayloadTooLarge, UnsupportedMediaType, problem_responses
from service.core.query_route import QueryOnlyRoute
from service.inference.encoding import PIXELS
from service.inference.inputs import read_images
from service.inference.registry import LoadedModel
from service.inference.schemas import (ClassificationPublic, CodePublic, DecodeCreate,
                                       ImagesPublic)
from service.settings import ServiceSettings

# 503: shed by admission control (queue full, or past the deadline), with Retry-After
router = APIRouter(tags=["inference"], route_class=QueryOnlyRoute,
                   responses=problem_responses(400, 404, 409, 413, 415, 422, 503))

IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "application/json": {"schema": {"type": "object", "properties": {
        "pixels": {"description": "784 numbers in [0, 1], or a list of such lists",
                   "type": "array", "items": {}},
        "image": {"type": "string", "description": "base64 image file"},
        "images": {"type": "array", "items": {"type": "string"},
                   "description": "base64 image files"}}}},
}}}
IMAGE_RESPONSE = {"content": {"image/png": {}, "application/json": {
    "schema": {"$ref": "#/components/schemas/ImagesPublic"}}},
    "description": "a PNG (one image, or a grid of several), or JSON pixels with "
                   "Accept: application/json"}
Scale = Annotated[int, Query(ge=1, le=16, description="enlarge each pixel of the PNG")]


def components() -> dict[str, dict]:
    """Schemas the routes refer to by hand (IMAGE_RESPONSE), for the OpenAPI document."""
    return {"ImagesPublic": ImagesPublic.model_json_schema(ref_template="#/components/schemas/"
                                                           "{model}")}


def _json(payload: dict) -> Response:
    # orjson: the stdlib's float formatting took 7% of a /classify request
    return Response(orjson.dumps(payload), media_type="application/json")


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "image/png" not in accept.split(",")[0]


def check_work(request: Request, n: int, scale: int, limit: int) -> None:
    """The work cap: the pixels of the answer (n images x 784 x scale^2 for a PNG); then
    admission: an answer that could not be encoded before the deadline is shed now,
    before its forward pass (``service.inference.encoding``)."""
    kind = "json" if _wants_json(request) else "png"
    pixels = n * PIXELS * (1 if kind == "json" else scale * scale)
    if pixels > limit:
        raise InvalidInput(f"{n} images at scale {scale} is {pixels} output pixels, over the "
                           f"limit of {limit} per request")
    request.app.state.encoder.admit(kind, pixels)


async def _images_response(request: Request, loaded: LoadedModel, images: torch.Tensor,
                           scale: int) -> Response:
    encoder = request.app.state.encoder  # large bodies are made off the event loop
    if _wants_json(request):
        return Response(await encoder.json(loaded.name, loaded.version, images),
                        media_type="application/json")
    return Response(await encoder.png(images, scale), media_type="image/png",
                    headers={"X-Model": loaded.name, "X-Model-Version": str(loaded.version)})


async def read_model_inputs(request: Request, settings: ServiceSettings,
                  normalize: NormalizeQuery) -> torch.Tensor:
    return await read_images(request, max_images=settings.max_images,
                             max_pixels=settings.max_image_pixels,
                             max_depth=settings.max_json_depth, normalization=normalize)


def with_inputs(body: dict, x: torch.Tensor, return_input: bool) -> dict:
    """The answer, with the model's inputs added where the request asked for them."""
    if return_input:
        body["inputs"] = x.tolist()
    return body


@router.post("/encode", response_model=CodePublic, openapi_extra=IMAGE_BODY,
             summary="Images -> latent code z (and class probabilities y)")
async def encode(request: Request, model: ModelQuery = None, version: VersionQuery = None,
                 normalize: NormalizeQuery = None, return_input: ReturnInputQuery = False
                 ) -> Response:
    registry, settings = serving(request)
    loaded = await registry.get(model, version)
    x = await read_model_inputs(request, settings, normalize)
    z, y = await loaded.batchers["encode"](x)
    return _json(with_inputs({"model": loaded.name, "version": loaded.version,
                              "z": z.tolist(), "y": None if y is None else y.tolist()},
                             x, return_input))


@router.post("/classify", response_model=ClassificationPublic, openapi_extra=IMAGE_BODY,
             summary="Images -> predicted class and class probabilities")
async def classify(request: Request, model: ModelQuery = None, version: VersionQuery = None,
                   normalize: NormalizeQuery = None, return_input: ReturnInputQuery = False
                   ) -> Response:
    registry, settings = serving(request)
    loaded = await registry.get(model, version)
    if not loaded.model.cfg.has_categorical:
        raise CapabilityError(
            f"{loaded.name} version {loaded.version} is a {loaded.model.cfg.mode.value} model "
            "and has no categorical code to classify with; use a semi_supervised or "
            "clustering model")
    x = await read_model_inputs(request, settings, normalize)
    _, y = await loaded.batchers["encode"](x)
    probabilities = y.tolist()
    labels = [p.index(max(p)) for p in probabilities]  # argmax: the first of equals
    body = {"model": loaded.name, "version": loaded.version,
            "predictions": [{"label": label, "probabilities": p}
                            for label, p in zip(labels, probabilities)]}
    if len(labels) == 1:
        body.update(label=labels[0], probabilities=probabilities[0])
    return _json(with_inputs(body, x, return_input))


@router.post("/reconstruct", openapi_extra=IMAGE_BODY, responses={200: IMAGE_RESPONSE},
             response_class=Response, summary="Images -> their reconstructions P(Q(x))")
async def reconstruct(request: Request,
                      model: ModelQuery = None, version: VersionQuery = None,
                      label: Annotated[int | None, Query(
                          ge=0, le=99, description="class of the images (supervised models)")]
                      = None,
                      scale: Scale = 1, normalize: NormalizeQuery = None) -> Response:
    registry, settings = serving(request)
    loaded = await registry.get(model, version)
    x = await read_model_inputs(request, settings, normalize)
    check_work(request, x.shape[0], scale, settings.max_output_pixels)
    labels = loaded.model.reconstruction_labels(label, x.shape[0], loaded.name)
    (images,) = await loaded.batchers["reconstruct"](x, labels)
    return await _images_response(request, loaded, images, scale)


async def json_body(request: Request) -> None:
    """Refuse non-JSON bodies with 415, as the image routes do, before FastAPI parses them."""
    content_type = request.headers.get("content-type", "application/json").lower()
    media = content_type.split(";")[0].strip()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(f"send the codes as application/json, not {media!r}")


@router.post("/decode", responses={200: IMAGE_RESPONSE}, response_class=Response,
             dependencies=[Depends(json_body)],
             summary="Latent codes (and labels) -> images")
async def decode(request: Request, body: DecodeCreate, model: ModelQuery = None,
                 version: VersionQuery = None, scale: Scale = 1) -> Response:
    registry, settings = serving(request)
    loaded = await registry.get(model, version)
    rows = body.z if body.z and isinstance(body.z[0], list) else [body.z]
    if len(rows) > settings.max_images:
        raise PayloadTooLarge(f"{len(rows)} codes is over the limit of {settings.max_images}")
    check_work(request, len(rows), scale, settings.max_output_pixels)
    z = codes(rows, loaded.model.cfg.z_dim, f"{loaded.name} version {loaded.version}")
    y = loaded.model.decoder_classes(body.label, z.shape[0], loaded.name)
    (images,) = await loaded.batchers["decode"](z, y)
    return await _images_response(request, loaded, images, scale)


@router.get("/sample", responses={200: IMAGE_RESPONSE}, response_class=Response,
            summary="Draw codes from the model's prior and decode them")
async def sample(request: Request,
                 label: Annotated[int | None, Query(
                     ge=0, le=99, description="class to draw (models with labels); "
                     "default: a random class per sample")] = None,
                 n: Annotated[int, Query(ge=1, description="number of samples")] = 1,
                 seed: Annotated[int | None, Query(
                     ge=0, le=2**63 - 1, description="makes the draw repeatable")] = None,
                 model: ModelQuery = None, version: VersionQuery = None,
                 scale: Scale = 1) -> Response:
    registry, settings = serving(request)
    if n > settings.max_samples:
        raise InvalidInput(f"n={n} is over the limit of {settings.max_samples}")
    check_work(request, n, scale, settings.max_output_pixels)
    loaded = await registry.get(model, version)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    z, y = loaded.model.sample_codes(n, label, generator, subject=loaded.name)
    (images,) = await loaded.batchers["decode"](z, y)
    return await _images_response(request, loaded, images, scale)


__all__ = ["router", "ImagesPublic"]
