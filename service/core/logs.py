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

Lines are written off the event loop: while the app serves, ``write_off_the_loop`` keeps
the handlers that write to a file or a pipe (of the root logger and uvicorn's) behind the
standard library's ``QueueHandler``, and a ``QueueListener`` thread formats and writes them.
The loop only makes the record and queues it; a slow or blocked log reader never stalls
it. uvicorn's own access line is dropped: this one (with the route template, the
duration and the id) takes its place, on when uvicorn's access log is on.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import re
import time
import uuid
from collections.abc import Callable
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

ACCESS_FIELDS = ("client", "method", "route", "status", "duration_ms")
ACCESS_LINE = "%s %s %s %d %.1f ms"  # the access fields, in their order


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
                peer = scope.get("client")
                client = f"{peer[0]}:{peer[1]}" if peer else "-"
                # Logger.info less its search of the stack for the caller (2.4 of 6.4 us)
                access.handle(access.makeRecord(
                    access.name, logging.INFO, __file__, 0, ACCESS_LINE,
                    (client, scope["method"], route, status, duration_ms), None,
                    extra={"client": client, "method": scope["method"], "route": route,
                           "status": status, "duration_ms": duration_ms}))
            request_id.reset(id_token)
            request_start.reset(start_token)


class JsonFormatter(aae_jobs.logs.JsonFormatter):
    """One JSON object per line, with the access log's fields."""

    fields = ACCESS_FIELDS


MAX_QUEUED = 10_000  # lines waiting for the writer; past it (a stuck reader) they are dropped


class _Enqueue(logging.handlers.QueueHandler):
    """Hands the record itself to the writer thread: formatting is the thread's work too
    (the standard ``prepare`` formats and copies it on the caller's thread). A line that
    finds the queue full is dropped and counted, and the count is logged with the next
    line that fits: a log reader that stops reading stops neither the loop nor the memory."""

    def __init__(self, lines: queue.Queue) -> None:
        super().__init__(lines)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            if self.dropped:
                self.queue.put_nowait(logging.makeLogRecord({
                    "name": __name__, "levelno": logging.WARNING, "levelname": "WARNING",
                    "msg": "%d log lines dropped: the log was not read fast enough",
                    "args": (self.dropped,)}))
                self.dropped = 0
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


def _writes_to_a_file(handler: logging.Handler) -> bool:
    """A handler whose write can block: a stream with a file descriptor (a terminal, a
    pipe, a file), not an in-memory one such as pytest's log capture."""
    stream = getattr(handler, "stream", None)
    try:
        return stream is not None and stream.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        return False


def _move_off_the_loop(logger: logging.Logger) -> Callable[[], None]:
    """The logger's writing handlers, behind a queue and a writer thread; returns what
    puts them back (after writing what is queued)."""
    writing = [h for h in logger.handlers if _writes_to_a_file(h)]
    if not writing:
        return lambda: None
    lines: queue.Queue = queue.Queue(MAX_QUEUED)
    enqueue = _Enqueue(lines)
    logger.handlers = [h for h in logger.handlers if h not in writing] + [enqueue]
    listener = logging.handlers.QueueListener(lines, *writing, respect_handler_level=True)
    listener.start()

    def put_back() -> None:
        listener.stop()
        logger.handlers = [h for h in logger.handlers if h is not enqueue] + writing
    return put_back


def write_off_the_loop() -> Callable[[], None]:
    """Called when the app starts serving (its lifespan): until the returned function is
    called (when it stops), the lines of the root and uvicorn loggers are written by
    threads. The lines after it (uvicorn's last ones, before it re-raises the signal that
    stopped it, which ends the process at once) are written as they are logged."""
    put_back = [_move_off_the_loop(logging.getLogger(name)) for name in ("", "uvicorn")]

    def stop() -> None:
        for undo in reversed(put_back):
            undo()
    return stop


_access_on: bool | None = None  # decided once per process, at the first configure


def configure(log_format: str) -> None:
    """Called by the app factory (the API's entry point): request ids on every record; if
    the process has no handler (plain ``uvicorn``), one on stderr at uvicorn's
    ``--log-level``; ``json``: every handler of the root and uvicorn loggers writes JSON
    lines. The access log is this module's, on when uvicorn's is (``--no-access-log``
    turns both off)."""
    global _access_on
    aae_jobs.logs.install_ids()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(TEXT))
        root.addHandler(handler)
        root.setLevel(logging.getLogger("uvicorn.error").getEffectiveLevel())
    uvicorn_access = logging.getLogger("uvicorn.access")
    if _access_on is None:
        _access_on = bool(uvicorn_access.handlers or uvicorn_access.propagate)
    access.disabled = not _access_on
    # uvicorn writes no line of its own (it looks for handlers once per connection)
    uvicorn_access.handlers, uvicorn_access.propagate = [], False
    if log_format == "json":
        for name in ("", "uvicorn", "uvicorn.error"):
            for handler in logging.getLogger(name).handlers:
                handler.setFormatter(JsonFormatter())
