"""Inference: encode, classify, reconstruct, decode, sample. Thin: parse, batch, shape."""

from __future__ import annotations

from typing import Annotated

import orjson
import torch
from fastapi import APIRouter, Depends, Query, Request, Response

from aae.errors import CapabilityError, InvalidInput
from service.deps import ModelQuery, VersionQuery, serving
from service.errors import PayloadTooLarge, UnsupportedMediaType, problem_responses
from service.images import png
from service.inputs import read_images
from service.query_route import QueryOnlyRoute
from service.registry import LoadedModel
from service.settings import ServiceSettings
from service.schemas import (ClassificationPublic, CodePublic, DecodeCreate, ImagesPublic)

router = APIRouter(tags=["inference"], route_class=QueryOnlyRoute,
                   responses=problem_responses(400, 404, 409, 413, 415, 422))

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


def _json(payload: dict) -> Response:
    # orjson: the stdlib's float formatting took 7% of a /classify request
    return Response(orjson.dumps(payload), media_type="application/json")


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "image/png" not in accept.split(",")[0]


def _images_response(request: Request, loaded: LoadedModel, images: torch.Tensor,
                     scale: int) -> Response:
    if _wants_json(request):
        return _json({"model": loaded.name, "version": loaded.version,
                      "images": images.tolist()})
    return Response(png(images, scale), media_type="image/png",
                    headers={"X-Model": loaded.name, "X-Model-Version": str(loaded.version)})


async def _images(request: Request, settings: ServiceSettings) -> torch.Tensor:
    return await read_images(request, max_images=settings.max_images,
                             max_pixels=settings.max_image_pixels)


@router.post("/encode", response_model=CodePublic, openapi_extra=IMAGE_BODY,
             summary="Images -> latent code z (and class probabilities y)")
async def encode(request: Request, model: ModelQuery = None,
                 version: VersionQuery = None) -> Response:
    registry, settings = serving(request)
    loaded = await registry.get(model, version)
    x = await _images(request, settings)
    z, y = await loaded.batchers["encode"](x)
    return _json({"model": loaded.name, "version": loaded.version, "z": z.tolist(),
                  "y": None if y is None else y.tolist()})


@router.post("/classify", response_model=ClassificationPublic, openapi_extra=IMAGE_BODY,
             summary="Images -> predicted class and class probabilities")
async def classify(request: Request, model: ModelQuery = None,
                   version: VersionQuery = None) -> Response:
    registry, settings = serving(request)
    loaded = await registry.get(model, version)
    if not loaded.model.cfg.can_classify:
        raise CapabilityError(
            f"{loaded.name} version {loaded.version} is a {loaded.model.cfg.mode.value} model "
            "and has no categorical code to classify with; use a semi_supervised or "
            "clustering model")
    x = await _images(request, settings)
    _, y = await loaded.batchers["encode"](x)
    probabilities = y.tolist()
    labels = [p.index(max(p)) for p in probabilities]  # argmax: the first of equals
    body = {"model": loaded.name, "version": loaded.version,
            "predictions": [{"label": label, "probabilities": p}
                            for label, p in zip(labels, probabilities)]}
    if len(labels) == 1:
        body.update(label=labels[0], probabilities=probabilities[0])
    return _json(body)


@router.post("/reconstruct", openapi_extra=IMAGE_BODY, responses={200: IMAGE_RESPONSE},
             response_class=Response, summary="Images -> their reconstructions P(Q(x))")
async def reconstruct(request: Request,
                      model: ModelQuery = None, version: VersionQuery = None,
                      label: Annotated[int | None, Query(
                          ge=0, le=99, description="class of the images (supervised models)")]
                      = None,
                      scale: Scale = 1) -> Response:
    registry, settings = serving(request)
    loaded = await registry.get(model, version)
    cfg = loaded.model.cfg
    if cfg.mode.value == "supervised" and label is None:
        raise InvalidInput("a supervised model reconstructs an image given its label: "
                           "add ?label=")
    if cfg.mode.value != "supervised" and label is not None:
        raise InvalidInput(f"{loaded.name} is a {cfg.mode.value} model: it infers the class "
                           "itself and takes no label")
    if label is not None and label >= cfg.n_classes:
        raise InvalidInput(f"label must be in 0..{cfg.n_classes - 1}")
    x = await _images(request, settings)
    labels = torch.full((x.shape[0],), -1 if label is None else label, dtype=torch.long)
    (images,) = await loaded.batchers["reconstruct"](x, labels)
    return _images_response(request, loaded, images, scale)


def _one_hot_rows(loaded: LoadedModel, labels: list[int] | None, n: int) -> torch.Tensor:
    """One-hot rows for ``n`` codes: one label for all, or one each."""
    cfg = loaded.model.cfg
    if not cfg.uses_labels:
        if labels is not None:
            raise InvalidInput(f"{loaded.name} is an unsupervised model and takes no label")
        return torch.zeros(n, 1)
    if labels is None:
        raise InvalidInput(f"{loaded.name} is a {cfg.mode.value} model: give a label in "
                           f"0..{cfg.n_classes - 1}")
    if len(labels) not in (1, n):
        raise InvalidInput(f"got {len(labels)} labels for {n} codes")
    if min(labels) < 0 or max(labels) >= cfg.n_classes:
        raise InvalidInput(f"label must be in 0..{cfg.n_classes - 1}")
    rows = torch.zeros(n, cfg.n_classes)
    if len(labels) == 1:
        rows[:, labels[0]] = 1
    else:
        rows[range(n), labels] = 1
    return rows


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
    if not rows or not rows[0]:
        raise InvalidInput("z must hold at least one code")
    if len(rows) > settings.max_images:
        raise PayloadTooLarge(f"{len(rows)} codes is over the limit of {settings.max_images}")
    z_dim = loaded.model.cfg.z_dim
    if any(len(row) != z_dim for row in rows):
        raise InvalidInput(f"each code z must have {z_dim} numbers for {loaded.name} "
                           f"version {loaded.version}")
    z = torch.tensor(rows, dtype=torch.float32)
    if not torch.isfinite(z).all():
        raise InvalidInput("z must hold finite numbers")
    labels = [body.label] if isinstance(body.label, int) else body.label
    y = _one_hot_rows(loaded, labels, len(rows))
    (images,) = await loaded.batchers["decode"](z, y)
    return _images_response(request, loaded, images, scale)


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
    loaded = await registry.get(model, version)
    cfg = loaded.model.cfg
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    labels = None
    if label is not None:
        labels = [label]
    elif cfg.uses_labels:
        labels = torch.randint(cfg.n_classes, (n,), generator=generator).tolist()
    y = _one_hot_rows(loaded, labels, n)
    components = None  # a supervised model's mixture prior: the label's component
    if labels is not None and cfg.mode.value == "supervised":
        components = torch.tensor(labels * n if len(labels) == 1 else labels)
    z = loaded.model.prior.sample(n, generator, components)
    (images,) = await loaded.batchers["decode"](z, y)
    return _images_response(request, loaded, images, scale)


__all__ = ["router", "ImagesPublic"]
