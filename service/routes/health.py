"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from aae.errors import AAEError
from service.deps import RegistryDep, StoreDep
from service.errors import ServiceUnavailable, problem_responses
from service.schemas import Health

router = APIRouter(tags=["health"], responses=problem_responses(503))


@router.get("/healthz", response_model=Health, summary="The process is alive")
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health,
            summary="The store is readable and the default model loads")
async def readyz(store: StoreDep, registry: RegistryDep) -> Health:
    if not store.root.is_dir():
        raise ServiceUnavailable(f"checkpoint store {store.root} is not readable")
    try:
        loaded = await registry.get()
    except AAEError as exc:
        raise ServiceUnavailable(f"default model {registry.default_model!r} is not loadable: "
                                 f"{exc}") from None
    return Health(status="ready", detail=f"{loaded.name} version {loaded.version}")
