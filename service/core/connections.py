"""The limits of an HTTP connection: header size, read timeouts, how many at once.

Every way of starting the API (``aae serve``, ``aae up``, the Docker image) runs uvicorn
with ``--http service.core.connections:LimitedHTTP``, uvicorn's own httptools protocol
with three additions, each read from the service's settings:

- ``AAE_HTTP_MAX_HEADER_BYTES``: a request line and header fields (the target's, the
  names' and the values' bytes) larger than this are answered ``431`` and the connection
  closed. httptools has no such limit (an 8 MB header was read and answered 200), and
  uvicorn's ``h11_max_incomplete_event_size`` applies only to its slower pure-Python h11
  protocol, which answers 400. A header still arriving is refused once what came of it
  is over the limit (at most two socket reads past it), so it is never buffered whole.
- ``AAE_HTTP_HEADER_TIMEOUT_S`` and ``AAE_HTTP_BODY_TIMEOUT_S``: a connection must
  send a complete request line and header within the first, counted from the request's
  first byte (or from the connection's opening, for its first request), and its body
  within the second, counted from the header's end; past either it is answered ``408``
  (when no response has started) and closed, however it trickles. uvicorn has no such
  timeout: its ``timeout_keep_alive`` runs only between requests, so a half-sent request
  (or a connection that sends nothing) stayed open for as long as the client liked. One
  timer per connection, re-armed only when it fires early, so a request costs three
  clock reads, not three timers.
- ``AAE_HTTP_MAX_CONNECTIONS``: uvicorn's own ``limit_concurrency`` (its requests past
  that many open connections or running requests are answered 503), set from the
  setting so that it holds however uvicorn was started.

Plain ``uvicorn service.app:create_app --factory`` without the ``--http`` option serves
without these limits.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.core.errors import problem
from service.settings import ServiceSettings, get_settings

PROTOCOL = "service.core.connections:LimitedHTTP"  # uvicorn's --http value
TOO_LARGE = "Request header fields too large"


def _raw(status: int, title: str, detail: str) -> bytes:
    """A whole problem-document response, written where no request cycle exists."""
    response = problem(status, title, detail, headers={"connection": "close"})
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
    head += [name + b": " + value + b"\r\n" for name, value in response.raw_headers]
    return b"".join(head) + b"\r\n" + response.body


class LimitedHTTP(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header size limit, header and body read
    timeouts, and the connection cap from the service's settings."""

    settings: ServiceSettings | None = None  # None: get_settings(), from the environment

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = self.settings or get_settings()
        self.limit_concurrency = settings.http_max_connections
        self.max_header_bytes = settings.http_max_header_bytes
        self.header_timeout_s = settings.http_header_timeout_s
        self.body_timeout_s = settings.http_body_timeout_s
        self.deadline: float | None = None  # when the request being read must be whole
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.reading_header = False
        self.header_bytes = 0  # of a header still arriving, as far as counted
        self.messages = 0

    # the read deadline: one timer per connection

    def _read_within(self, seconds: float) -> None:
        self.deadline = self.loop.time() + seconds
        if self.deadline_timer is None:
            self.deadline_timer = self.loop.call_at(self.deadline, self._deadline_reached)

    def _deadline_reached(self) -> None:
        self.deadline_timer = None
        if self.deadline is None or self.transport.is_closing():
            return  # no request being read (between requests, uvicorn's keep-alive rules)
        if self.loop.time() < self.deadline:  # moved on since the timer was set
            self.deadline_timer = self.loop.call_at(self.deadline, self._deadline_reached)
            return
        if self.messages == 0:
            self.transport.close()  # nothing sent at all: nothing to answer
            return
        phase = "header" if self.reading_header else "body"
        seconds = self.header_timeout_s if self.reading_header else self.body_timeout_s
        detail = (f"the request's {phase} did not arrive within {seconds:g} s "
                  f"(AAE_HTTP_{phase.upper()}_TIMEOUT_S)")
        self._close_with(408, "Request timeout", detail)

    def _close_with(self, status: int, title: str, detail: str) -> None:
        """Answer (unless the request's response has started) and close."""
        cycle = None if self.reading_header else self.cycle  # the request's own, if any
        if cycle is not None:
            cycle.disconnected = True  # the app, if still running, sees the client gone
            if cycle.response_started:
                self.transport.close()
                return
        self.transport.write(_raw(status, title, detail))
        self.transport.close()

    # uvicorn's protocol, extended

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.reading_header = True  # the first request's header is awaited from now
        self._read_within(self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.deadline_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused or timed out: the rest is not read
        before = (self.reading_header, self.messages)
        super().data_received(data)
        if self.reading_header and before == (True, self.messages) and self.messages:
            # the same header, still incomplete after a whole read: count it (the read
            # that began it is not counted, so this never counts another request's bytes)
            self.header_bytes += len(data)
            if self.header_bytes > self.max_header_bytes:
                self._close_with(431, TOO_LARGE, self._too_large_detail())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.messages += 1
        self.reading_header, self.header_bytes = True, 0
        if self.deadline is None:  # else: the connection's first request, timed from its opening
            self._read_within(self.header_timeout_s)

    def on_headers_complete(self) -> None:
        self.reading_header = False
        self._read_within(self.body_timeout_s)
        size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
        if size <= self.max_header_bytes:
            super().on_headers_complete()
            return
        app, self.app = self.app, self._refuse_header  # uvicorn's own cycle answers 431
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        self.deadline = None
        super().on_message_complete()


    def _too_large_detail(self) -> str:
        return (f"the request line and header fields are over the limit of "
                f"{self.max_header_bytes} bytes (AAE_HTTP_MAX_HEADER_BYTES)")

    async def _refuse_header(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(431, TOO_LARGE, self._too_large_detail(),
                           headers={"connection": "close"})
        await response(scope, receive, send)
