"""Errors under /v2 are the protocol's ``{"error": message}`` documents, not the problem
documents of the other routes. ``V2Route`` converts the library's and the service's
exceptions for this router's handlers; the statuses come from the service's one table
(``service.core.errors.status_of``), except that the protocol answers every invalid
request with 400 where the other routes say 422. Sheds by admission control are 503s with
``Retry-After`` here too; 405s and errors of unknown routes under /v2 get the same shape
from ``service.core.errors.error_response``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from aae.errors import AAEError
from service.core.errors import ServiceError, status_of

logger = logging.getLogger(__name__)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def protocol_status(status: int) -> int:
    """The protocol's status for one of the service's: invalid requests are 400."""
    return 400 if status == 422 else status


class V2Route(APIRoute):
    """A route whose errors are the protocol's ``{"error": message}`` documents."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def v2_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return error(400, "; ".join(
                    f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
                    for e in exc.errors()))
            except ServiceError as exc:  # a shed (503) keeps its Retry-After
                return error(protocol_status(exc.status), exc.detail, exc.headers)
            except AAEError as exc:
                status, title = status_of(exc)
                if status >= 500:
                    logger.error("%s: %s", title, exc)
                return error(protocol_status(status), str(exc))

        return v2_handler
