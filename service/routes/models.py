"""The checkpoint store's models, versions and aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from aae.checkpoints import config_fields
from aae.selection import promote
from aae.store import VersionInfo
from service.core.auth import RequireApiKey
from service.core.deps import RegistryDep, StoreDep
from service.core.errors import problem_responses
from service.core.schemas import ALIAS_PATTERN, NAME_PATTERN, VERSION_PATTERN
from service.inference.schemas import (AliasUpdate, ModelDetailPublic, ModelPublic,
                                       ModelVersionPublic)

router = APIRouter(prefix="/models", tags=["models"],
                   responses=problem_responses(404, 409, 422))

Name = Annotated[str, Path(description="model name", max_length=64, pattern=NAME_PATTERN)]
Version = Annotated[str, Path(description="version number or alias", max_length=64,
                              pattern=VERSION_PATTERN)]
Alias = Annotated[str, Path(description="alias name, e.g. production", max_length=64,
                            pattern=ALIAS_PATTERN)]


def _version_public(info: VersionInfo) -> ModelVersionPublic:
    return ModelVersionPublic(name=info.name, version=info.version, aliases=list(info.aliases),
                              created_at=info.created_at, config=config_fields(info.config),
                              metrics=info.metrics)


@router.get("", response_model=list[ModelPublic], summary="Every model with its versions")
def list_models(store: StoreDep) -> list[ModelPublic]:
    return [ModelPublic(name=name, versions=store.versions(name), aliases=store.aliases(name))
            for name in store.models()]


@router.get("/{name}", response_model=ModelDetailPublic, summary="One model, every version")
def get_model(name: Name, store: StoreDep) -> ModelDetailPublic:
    versions = store.versions(name)
    return ModelDetailPublic(name=name, versions=versions, aliases=store.aliases(name),
                             version_details=[_version_public(store.info(name, v))
                                              for v in versions])


@router.get("/{name}/versions/{version}", response_model=ModelVersionPublic,
            summary="One version: config, metrics, creation time, aliases")
def get_version(name: Name, version: Version, store: StoreDep) -> ModelVersionPublic:
    return _version_public(store.info(name, version))


@router.put("/{name}/aliases/{alias}", response_model=ModelVersionPublic,
            dependencies=[RequireApiKey], responses=problem_responses(401, 403),
            summary="Point an alias (e.g. production) at a version, optionally only if "
                    "it is no worse by a validation metric")
def set_alias(name: Name, alias: Alias, body: AliasUpdate, store: StoreDep,
              registry: RegistryDep) -> ModelVersionPublic:
    moved = promote(store, name, alias, body.version, body.unless_worse)
    registry.forget(name)
    return _version_public(store.info(name, moved.version))


@router.delete("/{name}/versions/{version}", status_code=204, response_class=Response,
               dependencies=[RequireApiKey],
               summary="Delete a version (refused while an alias points at it)",
               responses={409: {"description": "an alias points at the version"},
                          **problem_responses(401, 403)})
def delete_version(name: Name, version: Annotated[int, Path(ge=1)], store: StoreDep,
                   registry: RegistryDep) -> Response:
    store.delete_version(name, version)
    registry.forget(name, version)
    return Response(status_code=204)
