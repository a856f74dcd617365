"""FastAPI dependencies as ``Annotated`` aliases, so tests can swap them.

They are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool,
which cost four thread hops per request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from aae.store import CheckpointStore
from service.registry import ModelRegistry
from service.settings import ServiceSettings


async def get_app_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def get_store(request: Request) -> CheckpointStore:
    return request.app.state.store


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


SettingsDep = Annotated[ServiceSettings, Depends(get_app_settings)]
StoreDep = Annotated[CheckpointStore, Depends(get_store)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]

ModelQuery = Annotated[str | None, Query(
    description="model name (default: the service's default model)", max_length=64)]
VersionQuery = Annotated[str | None, Query(
    description="version number or alias (default: production if set, else latest)",
    max_length=64)]
