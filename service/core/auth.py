"""The API key: with ``AAE_API_KEY`` set, routes that change state (submitting and
cancelling jobs, moving aliases, deleting versions) need ``Authorization: Bearer <key>``.
Inference stays open. Unset, every route is open."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.core.deps import SettingsDep
from service.core.errors import Unauthorized

bearer = HTTPBearer(auto_error=False, description="the service's API key (AAE_API_KEY)")


async def require_api_key(
        settings: SettingsDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    if settings.api_key is None:
        return
    if credentials is None:
        raise Unauthorized("this endpoint needs an API key: Authorization: Bearer <key>")
    expected = settings.api_key.get_secret_value().encode()
    if not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise Unauthorized("the API key is not valid")


RequireApiKey = Depends(require_api_key)  # for a route's ``dependencies=[...]``
