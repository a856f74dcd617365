"""Request ids, the access log and the log format of the API.

Every request gets an id: the client's ``X-Request-ID`` when it is a sane token (1-128
characters of letters, digits and ``._:-``), else a fresh one. ``RequestContext`` (ASGI
middleware) puts it in a context variable for the request's duration, returns it in the
``X-Request-ID`` header of every response, and writes one access-log line per request
(``service.access``: method, route template, status, duration). Every log record
carries ``request_id`` (``-`` outside a request), whichever logger wrote it, so a
request's lines can be found together (``aae_jobs.logs``: a worker's lines carry the
job's id the same way). ``AAE_LOG_FORMAT=json`` writes one JSON object per line (time,
level, logger, message, request_id and the access fields).

The request's start time is kept beside its id: admission control measures the
request deadline from it (``service.inference.batching``).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

import aae_jobs.logs
from aae_jobs.logs import TEXT

logger = logging.getLogger(__name__)
access = logging.getLogger("service.access")

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode()
_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")

request_id = aae_jobs.logs.log_id  # the request's id while it is served
request_start: ContextVar[float | None] = ContextVar("request_start", default=None)

ACCESS_FIELDS = ("method", "route", "status", "duration_ms")


class RequestContext:
    """ASGI middleware: the request id and start time, the response header, the access log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        given = next((v for k, v in scope["headers"] if k == _HEADER_KEY), None)
        rid = given.decode() if given is not None and _SANE.fullmatch(given) else uuid.uuid4().hex
        id_token, start_token = request_id.set(rid), request_start.set(time.monotonic())
        header = (_HEADER_KEY, rid.encode())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if access.isEnabledFor(logging.INFO):
                route = getattr(scope.get("route"), "path", None) or scope["path"]
                duration_ms = round((time.perf_counter() - start) * 1000, 3)
                access.info("%s %s %d %.1f ms", scope["method"], route, status, duration_ms,
                            extra={"method": scope["method"], "route": route,
                                   "status": status, "duration_ms": duration_ms})
            request_id.reset(id_token)
            request_start.reset(start_token)


class JsonFormatter(aae_jobs.logs.JsonFormatter):
    """One JSON object per line, with the access log's fields."""

    fields = ACCESS_FIELDS


def configure(log_format: str) -> None:
    """Called by the app factory (the API's entry point): request ids on every record; if
    the process has no handler (plain ``uvicorn``), one on stderr at uvicorn's
    ``--log-level``, and the access log off with uvicorn's ``--no-access-log``;
    ``json``: every handler of the root and uvicorn loggers writes JSON lines."""
    aae_jobs.logs.install_ids()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(TEXT))
        root.addHandler(handler)
        root.setLevel(logging.getLogger("uvicorn.error").getEffectiveLevel())
        uvicorn_access = logging.getLogger("uvicorn.access")
        access.disabled = not uvicorn_access.handlers and not uvicorn_access.propagate
    if log_format == "json":
        for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
            for handler in logging.getLogger(name).handlers:
                handler.setFormatter(JsonFormatter())
