"""The Open Inference Protocol (KServe V2 REST, also spoken by Triton and MLServer) under /v2:
health, server and model metadata, Triton's model configuration, repository index and
statistics extensions, and inference with the binary tensor data extension. Thin: the
bodies are in ``schemas``, tensors in ``tensors``, the wire format in ``wire``, the two
input sets in ``inference`` and the error documents in ``route``.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic.json_schema import models_json_schema

from aae.errors import AAEError, CheckpointCorrupt
from service.core.deps import RegistryDep, SettingsDep, StoreDep, serving
from service.inference.registry import LoadedModel
from service.v2 import inference, wire
from service.v2.route import V2Route
from service.v2.schemas import (DefaultModelState, ErrorPublic, InferenceRequest,
                                InferenceResponse, LivePublic, ModelConfigPublic,
                                ModelMetadataPublic, ModelReadyPublic, ReadyPublic,
                                RepositoryIndexCreate, RepositoryModelPublic,
                                ServerMetadataPublic, StatisticsPublic)
from service.v2.tensors import config_tensors, outputs, signature

EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics"]

# "4XX" rather than 400 also stops FastAPI documenting its 422, which V2Route turns into 400
router = APIRouter(prefix="/v2", tags=["open inference protocol"], route_class=V2Route,
                   strict_content_type=False,
                   responses={"4XX": {"model": ErrorPublic, "description": "bad request (400), "
                                      "no such model or version (404), batch over the limit "
                                      "(413)"}})

Name = Annotated[str, Path(description="model name", max_length=64)]
Version = Annotated[str, Path(description="version number or alias", max_length=64)]
NOT_READY = {503: {"model": ErrorPublic, "description": "not ready"}}
INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                 "description": "binary tensor data extension: the JSON "
                                 "request (its length in Inference-Header-Content-Length), "
                                 "then each binary input's bytes"}}}}


# -- inference (first: FastAPI matches routes in order, a few us per candidate) --------------------------------------------------------------------------

async def _infer(request: Request, name: str, version: str | None) -> Response:
    registry, settings = serving(request)  # off app.state: no dependency solving per call
    loaded = await registry.get(name, version)
    body, binary = wire.parse_request(await request.body(),
                                      request.headers.get(wire.HEADER_LENGTH))
    produced = await inference.infer(loaded, body, binary, settings.max_images)
    binary_default = bool((body.parameters or {}).get("binary_data_output", False))
    entries, chunks = outputs(produced, body.outputs, binary_default)
    payload = {"model_name": loaded.name, "model_version": str(loaded.version),
               "id": body.id if body.id is not None else str(uuid.uuid4()), "outputs": entries}
    return wire.response(payload, chunks)


@router.post("/models/{name}/infer", response_model=InferenceResponse, openapi_extra=INFER_BODY,
             summary="Inference (the version the service picks)")
async def infer(request: Request, name: Name) -> Response:
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", response_model=InferenceResponse,
             openapi_extra=INFER_BODY, summary="Inference with a model version")
async def infer_version(request: Request, name: Name, version: Version) -> Response:
    return await _infer(request, name, version)


# -- health and metadata --------------------------------------------------------------------

@router.get("", response_model=ServerMetadataPublic, summary="Server metadata")
async def server_metadata(request: Request) -> ServerMetadataPublic:
    return ServerMetadataPublic(name=request.app.title, version=request.app.version,
                                extensions=EXTENSIONS)


@router.get("/health/live", response_model=LivePublic, summary="Server live")
async def server_live() -> LivePublic:
    return LivePublic(live=True)


@router.get("/health/ready", response_model=ReadyPublic, responses=NOT_READY,
            summary="Server ready: the checkpoint store is readable (an empty one too); "
            "the body says the default model's state")
async def server_ready(registry: RegistryDep) -> Response:
    state = await registry.readiness()
    if not state.ready:
        return JSONResponse({"ready": False, "error": state.reason}, status_code=503)
    default = DefaultModelState(name=state.default_model,
                                ready=state.default_version is not None,
                                version=state.default_version, reason=state.default_reason)
    return JSONResponse(ReadyPublic(ready=True, default_model=default).model_dump())


async def _ready(registry: RegistryDep, name: str, version: str | None) -> Response:
    try:
        loaded = await registry.get(name, version)
    except CheckpointCorrupt as exc:
        return JSONResponse({"name": name, "ready": False, "error": str(exc)}, status_code=503)
    body = ModelReadyPublic(name=loaded.name, ready=True,
                            version=None if version is None else str(loaded.version))
    return JSONResponse(body.model_dump(exclude_none=True))


@router.get("/models/{name}/ready", response_model=ModelReadyPublic, responses=NOT_READY,
            summary="Model ready (the version the service picks)")
async def model_ready(name: Name, registry: RegistryDep) -> Response:
    return await _ready(registry, name, None)


@router.get("/models/{name}/versions/{version}/ready", response_model=ModelReadyPublic,
            responses=NOT_READY, summary="Model version ready")
async def model_version_ready(name: Name, version: Version, registry: RegistryDep) -> Response:
    return await _ready(registry, name, version)


# -- statistics (declared before /models/{name}, which would take "stats" for a name) -------

@router.get("/models/stats", response_model=StatisticsPublic,
            summary="Inference statistics of every model version this process served")
async def all_stats(registry: RegistryDep) -> StatisticsPublic:
    return StatisticsPublic.model_validate({"model_stats": registry.stats.public()})


@router.get("/models/{name}/stats", response_model=StatisticsPublic,
            summary="Inference statistics of every version of a model")
async def model_stats(name: Name, registry: RegistryDep, store: StoreDep) -> StatisticsPublic:
    versions = store.versions(name)  # 404 for an unknown model
    return StatisticsPublic.model_validate(
        {"model_stats": [registry.stats.version(name, v) for v in versions]})


@router.get("/models/{name}/versions/{version}/stats", response_model=StatisticsPublic,
            summary="Inference statistics of a model version")
async def model_version_stats(name: Name, version: Version, registry: RegistryDep
                              ) -> StatisticsPublic:
    _, number = registry.resolve(name, version)
    return StatisticsPublic.model_validate(
        {"model_stats": [registry.stats.version(name, number)]})


# -- model metadata and configuration -------------------------------------------------------

async def _metadata(registry: RegistryDep, store: StoreDep, name: str, version: str | None
                    ) -> ModelMetadataPublic:
    loaded = await registry.get(name, version)
    cfg = loaded.model.cfg
    inputs, produced = signature(cfg)
    return ModelMetadataPublic(
        name=loaded.name, versions=[str(v) for v in store.versions(loaded.name)],
        platform="pytorch", inputs=inputs, outputs=produced,
        parameters={"version": str(loaded.version), "mode": cfg.mode.value})


@router.get("/models/{name}", response_model=ModelMetadataPublic,
            summary="Model metadata (the version the service picks)")
async def model_metadata(name: Name, registry: RegistryDep, store: StoreDep
                         ) -> ModelMetadataPublic:
    return await _metadata(registry, store, name, None)


@router.get("/models/{name}/versions/{version}", response_model=ModelMetadataPublic,
            summary="Model version metadata")
async def model_version_metadata(name: Name, version: Version, registry: RegistryDep,
                                 store: StoreDep) -> ModelMetadataPublic:
    return await _metadata(registry, store, name, version)


def _config(loaded: LoadedModel, max_batch_size: int) -> ModelConfigPublic:
    cfg = loaded.model.cfg
    inputs, produced = config_tensors(cfg)
    return ModelConfigPublic(
        name=loaded.name, platform="pytorch_libtorch", backend="pytorch",
        max_batch_size=max_batch_size, input=inputs, output=produced,
        parameters={"mode": {"string_value": cfg.mode.value},
                    "version": {"string_value": str(loaded.version)}})


@router.get("/models/{name}/config", response_model=ModelConfigPublic,
            summary="Model configuration, in Triton's shape (the version the service picks)")
async def model_config(name: Name, registry: RegistryDep, settings: SettingsDep
                       ) -> ModelConfigPublic:
    return _config(await registry.get(name, None), settings.max_images)


@router.get("/models/{name}/versions/{version}/config", response_model=ModelConfigPublic,
            summary="Model version configuration, in Triton's shape")
async def model_version_config(name: Name, version: Version, registry: RegistryDep,
                               settings: SettingsDep) -> ModelConfigPublic:
    return _config(await registry.get(name, version), settings.max_images)


@router.post("/repository/index", response_model=list[RepositoryModelPublic],
             summary="Every model version in the checkpoint store, with its state")
async def repository_index(store: StoreDep, body: RepositoryIndexCreate | None = None
                           ) -> list[RepositoryModelPublic]:
    index = []
    for name in store.models():
        for version in store.versions(name):
            try:
                store.info(name, version)
                index.append(RepositoryModelPublic(name=name, version=str(version),
                                                   state="READY"))
            except AAEError as exc:
                if not (body and body.ready):
                    index.append(RepositoryModelPublic(name=name, version=str(version),
                                                       state="UNAVAILABLE", reason=str(exc)))
    return index


def openapi_components() -> dict[str, dict]:
    """Schemas the infer routes' request body refers to (FastAPI lists only the models of
    declared parameters, and these routes read their body themselves)."""
    _, top = models_json_schema([(InferenceRequest, "validation")],
                                ref_template="#/components/schemas/{model}")
    return top["$defs"]
