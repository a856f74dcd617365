"""FastAPI dependencies as ``Annotated`` aliases, and ``serving`` for the hot routes.

The dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in its
thread pool, which cost four thread hops per request. The inference routes call
``serving(request)`` instead: resolving two dependencies cost them about 25 us of a
330 us request (measured in-process, benchmarks/serve_load.py for the whole)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from aae.store import CheckpointStore
from service.core.schemas import NAME_PATTERN, VERSION_PATTERN
from service.inference.images import Normalization
from service.inference.registry import ModelRegistry
from service.settings import ServiceSettings


async def get_app_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def get_store(request: Request) -> CheckpointStore:
    return request.app.state.store


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def serving(request: Request) -> tuple[ModelRegistry, ServiceSettings]:
    """The model registry and the settings, straight off the app's state."""
    state = request.app.state
    return state.registry, state.settings


SettingsDep = Annotated[ServiceSettings, Depends(get_app_settings)]
StoreDep = Annotated[CheckpointStore, Depends(get_store)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]

ModelQuery = Annotated[str | None, Query(
    description="model name (default: the service's default model)", max_length=64,
    pattern=NAME_PATTERN)]
VersionQuery = Annotated[str | None, Query(
    description="version number or alias (default: production if set, else latest)",
    max_length=64, pattern=VERSION_PATTERN)]
NormalizeQuery = Annotated[Normalization | None, Query(
    description="mnist: find the digit in each image file and frame it as MNIST's were "
    "(cropped, fitted into 20x20, centred by its centre of mass, dark ink on light paper "
    "inverted); none: the pixels as sent. Default: mnist for image files, none for JSON "
    "pixel rows")]
ReturnInputQuery = Annotated[bool, Query(
    description="include the 28x28 inputs the model saw (784 pixels per image) as inputs")]
