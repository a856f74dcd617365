"""The Open Inference Protocol (KServe V2 REST, also spoken by Triton and MLServer) under /v2:
server metadata and health, model metadata and readiness, inference. Thin: the bodies
are in ``schemas``, tensors in ``tensors``, the two input sets in ``inference`` and the
error documents in ``route``.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from aae.errors import AAEError, CheckpointCorrupt, InvalidInput
from service.deps import RegistryDep, SettingsDep, StoreDep
from service.errors import ServiceUnavailable
from service.v2 import inference
from service.v2.route import V2Route
from service.v2.schemas import (ErrorPublic, InferenceRequest, InferenceResponse,
                                ModelMetadataPublic, ServerMetadataPublic)
from service.v2.tensors import outputs, signature

# "4XX" rather than 400 also stops FastAPI documenting its 422, which V2Route turns into 400
router = APIRouter(prefix="/v2", tags=["open inference protocol"], route_class=V2Route,
                   responses={"4XX": {"model": ErrorPublic, "description": "bad request (400), "
                                      "batch over the limit (413)"}})

Name = Annotated[str, Path(description="model name", max_length=64)]
Version = Annotated[str, Path(description="version number or alias", max_length=64)]
NOT_FOUND = {404: {"model": ErrorPublic, "description": "no such model or version"}}
READY = {200: {"description": "ready (empty body)"},
         503: {"model": ErrorPublic, "description": "not ready"}}

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
    inputs, produced = signature(cfg)
    return ModelMetadataPublic(
        name=loaded.name, versions=[str(v) for v in store.versions(loaded.name)],
        platform="pytorch", inputs=inputs, outputs=produced,
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
        produced = await inference.encode(loaded, inputs, settings.max_images)
    elif "z" in inputs:
        produced = await inference.decode(loaded, inputs, settings.max_images)
    else:
        raise InvalidInput("send an 'images' input (encode) or a 'z' input (decode)")
    response = InferenceResponse.model_construct(
        model_name=loaded.name, model_version=str(loaded.version),
        id=body.id if body.id is not None else str(uuid.uuid4()),
        outputs=outputs(produced, body.outputs))
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
