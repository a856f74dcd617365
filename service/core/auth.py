"""Who may change things: the routes that change state (submitting and cancelling jobs
and sweeps, moving aliases, deleting versions) carry ``RequireApiKey``. Inference, a
read, stays open.

- With ``AAE_API_KEY`` set, they need ``Authorization: Bearer <key>`` (401 otherwise).
- Without it, the service is closed by default: they answer only clients on this
  machine, whose address (the ASGI client, which uvicorn takes from
  ``X-Forwarded-For`` for proxies it trusts) is a loopback one (127.0.0.0/8, ::1);
  any other client gets 403 saying how to set a key. A client without an address
  (a Unix socket, which a proxy may stand behind) is not taken for a local one.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.core.deps import SettingsDep
from service.core.errors import Forbidden, Unauthorized

bearer = HTTPBearer(auto_error=False, description="the service's API key (AAE_API_KEY)")

SET_A_KEY = ("set AAE_API_KEY on the server and send Authorization: Bearer <key> "
             "(docs/operations.md#who-may-change-things)")


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address, or "localhost") is this machine's loopback."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


async def require_api_key(
        request: Request, settings: SettingsDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    if settings.api_key is None:
        client = request.client.host if request.client else None
        if is_loopback(client):
            return
        raise Forbidden(f"without an API key this server lets only clients on its own "
                        f"machine (loopback) change anything, and {client or 'this client'} "
                        f"is not one: {SET_A_KEY}")
    if credentials is None:
        raise Unauthorized("this endpoint needs an API key: Authorization: Bearer <key>")
    expected = settings.api_key.get_secret_value().encode()
    if not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise Unauthorized("the API key is not valid")


RequireApiKey = Depends(require_api_key)  # for a route's ``dependencies=[...]``
