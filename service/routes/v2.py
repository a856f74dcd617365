"""The Open Inference Protocol (KServe V2 REST, also spoken by Triton and MLServer) under /v2.

Server metadata and health, model metadata and readiness, inference. A model answers one
of two input sets:

- ``images`` (FP32 [-1, 784], pixels in [0, 1]) -> ``z`` (FP32 [-1, z_dim]), ``y``
  (FP32 [-1, n_classes], models with a categorical code) and ``label`` (INT64 [-1],
  models that classify): the encoder;
- ``z`` and, for models with a class input, ``label`` (INT64 [-1]) -> ``images``: the decoder.

Tensor ``data`` may be flat (row-major) or nested. Errors are the protocol's
``{"error": message}``, not the problem+json documents of the other routes: ``V2Route``
converts the library's and the service's exceptions for the handlers of this router only.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import torch
from fastapi import APIRouter, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from torch.nn import functional as F

from aae.config import AAEConfig
from aae.errors import (AAEError, CapabilityError, CheckpointCorrupt, CheckpointNotFound,
                        InvalidInput, InvalidName)
from service.deps import RegistryDep, SettingsDep, StoreDep
from service.errors import PayloadTooLarge, ServiceError, ServiceUnavailable
from service.registry import LoadedModel

logger = logging.getLogger(__name__)

FLOATS = ("FP32", "FP64")
INTEGERS = ("INT32", "INT64")
DATATYPES = {torch.float32: "FP32", torch.int64: "INT64"}

# -- bodies ------------------------------------------------------------------------------

Parameters = dict[str, str | bool | int | float]


class ErrorPublic(BaseModel):
    error: str = Field(description="what went wrong")


class ServerMetadataPublic(BaseModel):
    name: str
    version: str
    extensions: list[str]


class MetadataTensor(BaseModel):
    name: str
    datatype: str = Field(description="FP32, INT64, ...")
    shape: list[int] = Field(description="-1 marks a variable dimension (the batch)")
    parameters: Parameters | None = Field(
        None, description='"operation": "encode" or "decode", the input set it belongs to')


class ModelMetadataPublic(BaseModel):
    name: str
    versions: list[str] = Field(description="the model's version numbers")
    platform: str
    inputs: list[MetadataTensor] = Field(
        description='send either "images" (encode) or "z" [+ "label"] (decode)')
    outputs: list[MetadataTensor]
    parameters: Parameters | None = None


class RequestInput(BaseModel):
    name: str = Field(description='"images", or "z" and "label"')
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] = Field(description="the values, row-major: flat or nested")


class RequestOutput(BaseModel):
    name: str
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = Field(
        None, description="the outputs to return (default: all the input set produces)")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[float | int] = Field(description="the values, flat and row-major")


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


# -- errors as {"error": message} --------------------------------------------------------

def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _status(exc: AAEError) -> int:
    if isinstance(exc, CheckpointNotFound):
        return 404
    if isinstance(exc, (InvalidInput, InvalidName, CapabilityError)):
        return 400
    return 500


class V2Route(APIRoute):
    """A route whose errors are the protocol's ``{"error": message}`` documents."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def v2_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return _error(400, "; ".join(
                    f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
                    for e in exc.errors()))
            except ServiceError as exc:
                return _error(exc.status, exc.detail)
            except AAEError as exc:
                status = _status(exc)
                if status >= 500:
                    logger.error("%s: %s", type(exc).__name__, exc)
                return _error(status, str(exc))

        return v2_handler


# "4XX" rather than 400 also stops FastAPI documenting its 422, which V2Route turns into 400
router = APIRouter(prefix="/v2", tags=["open inference protocol"], route_class=V2Route,
                   responses={"4XX": {"model": ErrorPublic, "description": "bad request (400), "
                                      "batch over the limit (413)"}})

Name = Annotated[str, Path(description="model name", max_length=64)]
Version = Annotated[str, Path(description="version number or alias", max_length=64)]
NOT_FOUND = {404: {"model": ErrorPublic, "description": "no such model or version"}}
READY = {200: {"description": "ready (empty body)"},
         503: {"model": ErrorPublic, "description": "not ready"}}

# -- the model's tensors ------------------------------------------------------------------


def _tensor(name: str, datatype: str, width: int | None, operation: str) -> MetadataTensor:
    return MetadataTensor(name=name, datatype=datatype,
                          shape=[-1] if width is None else [-1, width],
                          parameters={"operation": operation})


def _signature(cfg: AAEConfig) -> tuple[list[MetadataTensor], list[MetadataTensor]]:
    inputs = [_tensor("images", "FP32", cfg.x_dim, "encode"),
              _tensor("z", "FP32", cfg.z_dim, "decode")]
    if cfg.uses_labels:
        inputs.append(_tensor("label", "INT64", None, "decode"))
    outputs = [_tensor("z", "FP32", cfg.z_dim, "encode")]
    if cfg.has_categorical:
        outputs.append(_tensor("y", "FP32", cfg.n_classes, "encode"))
    if cfg.can_classify:
        outputs.append(_tensor("label", "INT64", None, "encode"))
    outputs.append(_tensor("images", "FP32", cfg.x_dim, "decode"))
    return inputs, outputs


def _values(tensor: RequestInput, datatypes: tuple[str, ...], limit: int) -> torch.Tensor:
    """An input's data as a tensor of its declared shape (batch first, at most ``limit``)."""
    name = tensor.name
    if tensor.datatype not in datatypes:
        raise InvalidInput(f"input {name!r} must have datatype {' or '.join(datatypes)}, "
                           f"got {tensor.datatype!r}")
    if not tensor.shape or any(d < 0 for d in tensor.shape):
        raise InvalidInput(f"input {name!r}: shape must be a list of non-negative sizes, "
                           f"got {tensor.shape}")
    if tensor.shape[0] < 1:
        raise InvalidInput(f"input {name!r} must hold at least one row")
    if tensor.shape[0] > limit:
        raise PayloadTooLarge(f"a batch of {tensor.shape[0]} is over the limit of {limit}")
    try:
        values = torch.tensor(tensor.data)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise InvalidInput(f"input {name!r}: data must be an array of numbers, flat or "
                           "nested with equal lengths") from None
    if values.dtype == torch.bool or values.is_complex():
        raise InvalidInput(f"input {name!r}: data must be numbers")
    if tensor.datatype in INTEGERS and values.is_floating_point():
        raise InvalidInput(f"input {name!r} is {tensor.datatype}: data must be integers")
    if values.numel() != math.prod(tensor.shape):
        raise InvalidInput(f"input {name!r} has {values.numel()} values, its shape "
                           f"{tensor.shape} needs {math.prod(tensor.shape)}")
    return values.reshape(tensor.shape)


def _rows(tensor: RequestInput, width: int, limit: int) -> torch.Tensor:
    """A float input as (n, width) finite float32 rows; trailing dimensions are flattened."""
    values = _values(tensor, FLOATS, limit)
    if values.ndim < 2 or math.prod(values.shape[1:]) != width:
        raise InvalidInput(f"input {tensor.name!r} must have shape [n, {width}], "
                           f"got {tensor.shape}")
    rows = values.reshape(values.shape[0], width).float()
    if not torch.isfinite(rows).all():
        raise InvalidInput(f"input {tensor.name!r} must hold finite numbers")
    return rows


def _only(loaded: LoadedModel, inputs: dict[str, RequestInput], allowed: set[str]) -> None:
    extra = sorted(set(inputs) - allowed)
    if extra == ["label"] and not loaded.model.cfg.uses_labels:
        raise InvalidInput(f"{loaded.name} is an unsupervised model and takes no 'label' input")
    if extra:
        decode = "'z' and 'label'" if loaded.model.cfg.uses_labels else "'z'"
        raise InvalidInput(f"unexpected input {extra[0]!r}: send 'images' (encode) or "
                           f"{decode} (decode)")


# -- the two input sets -------------------------------------------------------------------

async def _encode(loaded: LoadedModel, inputs: dict[str, RequestInput], limit: int
                  ) -> dict[str, torch.Tensor]:
    """images -> z, y (models with a categorical code), label (models that classify)."""
    cfg = loaded.model.cfg
    _only(loaded, inputs, {"images"})
    x = _rows(inputs["images"], cfg.x_dim, limit)
    if x.min() < 0 or x.max() > 1:  # checked here: a bad row would fail its whole batch
        raise InvalidInput("input 'images': pixels must lie in [0, 1]")
    z, y = await loaded.batchers["encode"](x)
    outputs = {"z": z}
    if y is not None:
        outputs["y"] = y
        if cfg.can_classify:
            outputs["label"] = y.argmax(1)
    return outputs


async def _decode(loaded: LoadedModel, inputs: dict[str, RequestInput], limit: int
                  ) -> dict[str, torch.Tensor]:
    """z (and label, for models with a class input) -> images."""
    cfg = loaded.model.cfg
    _only(loaded, inputs, {"z", "label"} if cfg.uses_labels else {"z"})
    z = _rows(inputs["z"], cfg.z_dim, limit)
    n = z.shape[0]
    if not cfg.uses_labels:
        y = torch.zeros(n, 1)
    elif "label" not in inputs:
        raise InvalidInput(f"{loaded.name} is a {cfg.mode.value} model: add a 'label' input "
                           f"(INT64 [{n}], classes in 0..{cfg.n_classes - 1})")
    else:
        labels = _values(inputs["label"], INTEGERS, limit)
        if labels.ndim > 2 or labels.shape[0] != n or labels.numel() != n:
            raise InvalidInput(f"input 'label' must have shape [{n}], one per code, "
                               f"got {inputs['label'].shape}")
        labels = labels.reshape(n).long()
        if labels.min() < 0 or labels.max() >= cfg.n_classes:
            raise InvalidInput(f"input 'label': classes must be in 0..{cfg.n_classes - 1}")
        y = F.one_hot(labels, cfg.n_classes).float()
    (images,) = await loaded.batchers["decode"](z, y)
    return {"images": images}


def _outputs(produced: dict[str, torch.Tensor], requested: list[RequestOutput] | None
             ) -> list[ResponseOutput]:
    names = list(dict.fromkeys(o.name for o in requested)) if requested else list(produced)
    for name in names:
        if name not in produced:
            raise InvalidInput(f"unknown output {name!r}: these inputs give "
                               f"{', '.join(repr(n) for n in produced)}")
    return [ResponseOutput.model_construct(
        name=name, shape=list(produced[name].shape), datatype=DATATYPES[produced[name].dtype],
        data=produced[name].reshape(-1).tolist()) for name in names]


# -- handlers -----------------------------------------------------------------------------

@router.get("", response_model=ServerMetadataPublic, summary="Server metadata")
async def server_metadata(request: Request) -> ServerMetadataPublic:
    return ServerMetadataPublic(name=request.app.title, version=request.app.version,
                                extensions=[])


@router.get("/health/live", response_class=Response,
            responses={200: {"description": "live (empty body)"}}, summary="Server live")
async def server_live() -> Response:
    return Response(status_code=200)


@router.get("/health/ready", response_class=Response, responses=READY,
            summary="Server ready: the store is readable and the default model loads")
async def server_ready(store: StoreDep, registry: RegistryDep) -> Response:
    if not store.root.is_dir():
        raise ServiceUnavailable(f"checkpoint store {store.root} is not readable")
    try:
        await registry.get()
    except AAEError as exc:
        raise ServiceUnavailable(f"default model {registry.default_model!r} is not loadable: "
                                 f"{exc}") from None
    return Response(status_code=200)


async def _ready(registry: RegistryDep, name: str, version: str | None) -> Response:
    try:
        await registry.get(name, version)
    except CheckpointCorrupt as exc:
        raise ServiceUnavailable(str(exc)) from None
    return Response(status_code=200)


@router.get("/models/{name}/ready", response_class=Response, responses={**READY, **NOT_FOUND},
            summary="Model ready (the version the service picks)")
async def model_ready(name: Name, registry: RegistryDep) -> Response:
    return await _ready(registry, name, None)


@router.get("/models/{name}/versions/{version}/ready", response_class=Response,
            responses={**READY, **NOT_FOUND}, summary="Model version ready")
async def model_version_ready(name: Name, version: Version, registry: RegistryDep) -> Response:
    return await _ready(registry, name, version)


async def _metadata(registry: RegistryDep, store: StoreDep, name: str, version: str | None
                    ) -> ModelMetadataPublic:
    loaded = await registry.get(name, version)
    cfg = loaded.model.cfg
    inputs, outputs = _signature(cfg)
    return ModelMetadataPublic(
        name=loaded.name, versions=[str(v) for v in store.versions(loaded.name)],
        platform="pytorch", inputs=inputs, outputs=outputs,
        parameters={"version": str(loaded.version), "mode": cfg.mode.value})


@router.get("/models/{name}", response_model=ModelMetadataPublic, responses=NOT_FOUND,
            summary="Model metadata (the version the service picks)")
async def model_metadata(name: Name, registry: RegistryDep, store: StoreDep
                         ) -> ModelMetadataPublic:
    return await _metadata(registry, store, name, None)


@router.get("/models/{name}/versions/{version}", response_model=ModelMetadataPublic,
            responses=NOT_FOUND, summary="Model version metadata")
async def model_version_metadata(name: Name, version: Version, registry: RegistryDep,
                                 store: StoreDep) -> ModelMetadataPublic:
    return await _metadata(registry, store, name, version)


async def _infer(registry: RegistryDep, settings: SettingsDep, name: str, version: str | None,
                 body: InferenceRequest) -> Response:
    loaded = await registry.get(name, version)
    inputs = {tensor.name: tensor for tensor in body.inputs}
    if len(inputs) != len(body.inputs):
        raise InvalidInput("each input may be given once")
    if "images" in inputs:
        produced = await _encode(loaded, inputs, settings.max_images)
    elif "z" in inputs:
        produced = await _decode(loaded, inputs, settings.max_images)
    else:
        raise InvalidInput("send an 'images' input (encode) or a 'z' input (decode)")
    response = InferenceResponse.model_construct(
        model_name=loaded.name, model_version=str(loaded.version),
        id=body.id if body.id is not None else str(uuid.uuid4()),
        outputs=_outputs(produced, body.outputs))
    return Response(response.model_dump_json(exclude_none=True), media_type="application/json")


@router.post("/models/{name}/infer", response_model=InferenceResponse, responses=NOT_FOUND,
             summary="Inference (the version the service picks)")
async def infer(name: Name, body: InferenceRequest, registry: RegistryDep,
                settings: SettingsDep) -> Response:
    return await _infer(registry, settings, name, None, body)


@router.post("/models/{name}/versions/{version}/infer", response_model=InferenceResponse,
             responses=NOT_FOUND, summary="Inference with a model version")
async def infer_version(name: Name, version: Version, body: InferenceRequest,
                        registry: RegistryDep, settings: SettingsDep) -> Response:
    return await _infer(registry, settings, name, version, body)
