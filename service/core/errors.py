"""Every error becomes an ``application/problem+json`` document (RFC 9457), here and only here.

The library raises its own ``AAEError`` subclasses; the service adds a few for HTTP-level
input problems. ``install`` maps them all, plus FastAPI's validation errors, to statuses.
"""

from __future__ import annotations

import errno
import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from aae.errors import (AAEError, AliasInUse, CapabilityError, CheckpointCorrupt,
                        CheckpointDamaged, CheckpointNotFound, InvalidInput, InvalidName,
                        NonFiniteOutput)
from aae.selection import MetricMissing, MetricWorse
from service.core.schemas import Problem

logger = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


class ServiceError(Exception):
    """An HTTP-level problem with a request. Subclasses set the status and title."""

    status = 400
    title = "Bad request"
    headers: dict[str, str] | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ServiceError):
    """A body that cannot be parsed (invalid JSON, nested too deep, not UTF-8)."""

    title = "Malformed request body"


class BadImage(ServiceError):
    title = "Not a usable image"


class PayloadTooLarge(ServiceError):
    status = 413
    title = "Payload too large"


class UnsupportedMediaType(ServiceError):
    status = 415
    title = "Unsupported media type"


class ServiceUnavailable(ServiceError):
    status = 503
    title = "Service unavailable"


class Overloaded(ServiceUnavailable):
    """Admission control shed the request before computing it: its model's queue is full
    (``queue_full``) or it waited past the request deadline (``deadline``). Made by
    ``service.inference.batching.shed``, which counts it where it is shed."""

    title = "Overloaded"

    def __init__(self, reason: str, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.reason = reason
        self.headers = {"Retry-After": str(max(1, retry_after_s))}


class QueueUnavailable(ServiceUnavailable):
    """The job queue (Redis) did not answer, or did not a moment ago: its circuit breaker
    is open (``service.jobs.breaker``). Retry after the breaker's time."""

    title = "Job queue unavailable"

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(max(1, retry_after_s))}


class Unauthorized(ServiceError):
    status = 401
    title = "Unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(ServiceError):
    """A change refused to this client: without an API key, only loopback clients may."""

    status = 403
    title = "Forbidden"


class JobNotFound(ServiceError):
    status = 404
    title = "Not found"


class JobEnded(ServiceError):
    status = 409
    title = "Conflict"


LIBRARY_STATUS: list[tuple[type[AAEError], int, str]] = [
    (CheckpointNotFound, 404, "Not found"),
    (InvalidName, 422, "Invalid name"),
    (InvalidInput, 422, "Invalid input"),
    (CapabilityError, 409, "Not supported by this model"),
    (AliasInUse, 409, "Conflict"),
    (MetricWorse, 409, "Not promoted: the version is worse"),
    (MetricMissing, 422, "Metric missing"),
    (CheckpointDamaged, 500, "Model damaged"),
    (CheckpointCorrupt, 500, "Model cannot be loaded"),
    (NonFiniteOutput, 500, "Model answer is not finite"),
]

# a write to the store that finds no space (or no quota) left: 507 naming the store
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def problem_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` entries documenting these statuses as problem documents."""
    return {status: {"model": Problem, "content": {PROBLEM: {}},
                     "description": HTTPStatus(status).phrase} for status in statuses}


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None,
            **extra: object) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def is_v2(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def error_response(path: str, status: int, title: str, detail: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The error document for a request to ``path``: the Open Inference Protocol's
    ``{"error": message}`` under /v2 (400 where the other routes say 422), else a
    problem document."""
    if is_v2(path):
        return JSONResponse({"error": detail}, status_code=400 if status == 422 else status,
                            headers=headers)
    return problem(status, title, detail, headers)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: FastAPI, scope: dict) -> list[str]:
    """The methods of the request's resource (for 405's Allow): those the OpenAPI document
    lists for the path it matches (a fixed path before a templated one, as OpenAPI
    says: /jobs/train is not /jobs/{job_id}), else those the router answers."""
    import re

    from starlette.routing import Match

    paths = getattr(app.state, "allow_paths", None)
    if paths is None:
        paths = []
        for template, operations in app.openapi().get("paths", {}).items():
            pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
                                 + "$")
            methods = {m.upper() for m in operations if m.upper() in METHODS}
            paths.append(("{" in template, pattern, methods))
        paths.sort(key=lambda entry: entry[0])  # fixed paths first
        app.state.allow_paths = paths
    for _, pattern, methods in paths:
        if pattern.match(scope["path"]):
            return [m for m in METHODS if m in methods]
    return [method for method in METHODS
            if any(route.matches({**scope, "method": method})[0] is Match.FULL
                   for route in app.router.routes)]


NAMED = {"name": "model name", "model": "model name", "alias": "alias"}


def _library_message(error: dict) -> str | None:
    """For a name, alias or version refused by its OpenAPI pattern (or range): the store's
    own message, which says the rule (the patterns are the store's rules in JSON Schema)."""
    from aae.store import _validate_version, validate_name

    loc, value = error.get("loc", ()), error.get("input")
    field = next((p for p in reversed(loc) if isinstance(p, str) and
                  p in {*NAMED, "version"}), None)
    if field is None or not isinstance(value, (str, int)):
        return None
    try:
        if field != "version":
            validate_name(value, NAMED[field])
        elif isinstance(value, int) or value.isdigit():
            _validate_version(value)
        else:
            validate_name(value, "alias")
    except AAEError as exc:
        return str(exc)
    return None


def status_of(exc: AAEError) -> tuple[int, str]:
    for cls, status, title in LIBRARY_STATUS:
        if isinstance(exc, cls):
            return status, title
    return 500, "Internal error"


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(request.url.path, exc.status, exc.title, exc.detail, exc.headers)

    @app.exception_handler(AAEError)
    async def _library(_: Request, exc: AAEError) -> JSONResponse:
        status, title = status_of(exc)
        if status >= 500:
            logger.error("%s: %s", title, exc)
        return problem(status, title, str(exc), **getattr(exc, "fields", {}))

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _queue_down(_: Request, exc: Exception) -> JSONResponse:
        logger.error("the job queue is unreachable: %s", exc)  # the address: logs only
        return problem(503, QueueUnavailable.title,
                       "training jobs are unavailable: the job queue (Redis) cannot be "
                       "reached; inference endpoints still serve the published models",
                       headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        library = [_library_message(e) for e in exc.errors()]
        errors = [{"loc": list(e.get("loc", ())), "msg": said or e.get("msg", "")}
                  for e, said in zip(exc.errors(), library)]
        detail = "; ".join(dict.fromkeys(  # once each: a union's branches say it twice
            e["msg"] if said else  # the store's message names the value
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e, said in zip(errors, library)))
        if any(e.get("type") == "json_invalid" for e in exc.errors()):  # not JSON at all
            return problem(400, BadRequest.title, f"body is not valid JSON: {detail}",
                           errors=errors)
        return problem(422, "Invalid request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # RFC 9110: every method the resource has
            headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        # the Open Inference Protocol's error shape under /v2, unknown routes included
        return error_response(request.url.path, exc.status_code, str(exc.detail),
                              str(exc.detail), headers or None)

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> JSONResponse:
        if exc.errno not in NO_SPACE:
            return await _unexpected(request, exc)
        root = request.app.state.store.root
        logger.error("the checkpoint store %s is full: %s", root, exc)
        return problem(507, "Insufficient storage",
                       f"the checkpoint store {root} has no space left "
                       f"({exc.strerror or 'no space left on device'}): nothing was "
                       "changed; free space there (AAE_MODEL_DIR) and retry",
                       store=str(root))

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> JSONResponse:
        # the client hung up mid-body (or its body read timed out): nobody reads this
        # answer; logged as what it is, not as an internal error
        logger.info("client disconnected before its %s %s body was read", request.method,
                    request.url.path)
        return problem(400, "Client disconnected", "the request body did not arrive")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error answering %s %s", request.method, request.url.path)
        return error_response(request.url.path, 500, "Internal error",
                              f"unexpected {type(exc).__name__}; see the logs of this "
                              "request id")
