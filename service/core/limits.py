"""A limit on the size of every request body, enforced before any route reads it.

FastAPI 0.16x has ``FastAPI(max_body_size=...)`` (Starlette's ``RequestBodyLimit``
middleware). It is kept out for what it answers, not for speed (49 against 56 us per
request, ``python -m benchmarks.hand_written``): it checks the size only when a route
reads the body and answers with a plain-text "Content Too Large" (or a 413 in place of
any response whose request declared too long a body), where this middleware refuses
before routing with a problem document that says the size and the limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import PayloadTooLarge, error_response


class BodySizeLimit:
    """ASGI middleware: a body declared (``Content-Length``) or found (chunked) to be over
    ``limit`` bytes is answered with a 413 error document (a problem document, or the
    protocol's under /v2); the route never runs.
    A chunked body is buffered here (up to the limit) so that it can be measured first."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, detail: str) -> None:
        response = error_response(scope["path"], PayloadTooLarge.status, PayloadTooLarge.title,
                                  detail)
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                await self._refuse(scope, receive, send, f"request body of {int(declared)} "
                                   f"bytes is over the limit of {self.limit}")
                return
            await self.app(scope, receive, send)
            return
        if b"chunked" not in headers.get(b"transfer-encoding", b""):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                await self._refuse(scope, receive, send,
                                   f"request body is over the limit of {self.limit} bytes")
                return
        body: bytes | None = b"".join(chunks)

        async def replay() -> Message:
            nonlocal body
            if body is None:  # replayed already: what follows is the client's (disconnect)
                return await receive()
            message = {"type": "http.request", "body": body, "more_body": False}
            body = None
            return message

        await self.app(scope, replay, send)
