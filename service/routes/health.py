"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from service.core.deps import RegistryDep
from service.core.errors import ServiceUnavailable, problem_responses
from service.core.schemas import Health

router = APIRouter(tags=["health"], responses=problem_responses(503))


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:  # async: a sync route waits for a thread (and the GIL)
    return Health(status="ok")


@router.get("/readyz", response_model=Health,
            summary="Ready to take requests: the checkpoint store is readable (an empty "
            "store included); the detail says the default model's state")
async def readyz(registry: RegistryDep) -> Health:
    state = await registry.readiness()
    if not state.ready:
        raise ServiceUnavailable(state.reason or "not ready")
    if state.default_version is None:
        detail = (f"default model {state.default_model!r} is not loadable yet "
                  f"({state.default_reason}); training and other models are served")
    else:
        detail = f"{state.default_model} version {state.default_version}"
    if state.damaged:
        found = ", ".join(f"{name} version {version} ({file})"
                          for (name, version), file in sorted(state.damaged.items()))
        detail += (f"; {len(state.damaged)} damaged version(s) found and not served: "
                   f"{found} (aae store verify)")
    return Health(status="ready", detail=detail)
