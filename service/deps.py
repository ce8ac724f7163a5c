"""FastAPI dependencies: the app's state and the admin bearer-token check.

Both are ``async def``: FastAPI runs a plain ``def`` dependency on anyio's shared worker
threads, so a route (``/readyz``, ``/metrics``, admin) would wait for a free thread whenever
they are busy. These only read memory, so they run on the event loop."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import Forbidden, Unauthorized
from service.state import ServiceState

_bearer = HTTPBearer(auto_error=False, description="The admin token (FORECAST_SERVICE_ADMIN_TOKEN).")


async def get_state(request: Request) -> ServiceState:
    return _state(request)


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


State = Annotated[ServiceState, Depends(get_state)]
ClientKey = Annotated[
    str | None,
    Header(alias="X-Client-Key", max_length=256, description="Sticky A/B assignment key."),
]


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Admin routes need the bearer token; with no token configured they are disabled (403),
    never open. The comparison takes constant time and the token is never echoed."""
    expected = _state(request).settings.admin_token_value()
    if expected is None:
        raise Forbidden("admin routes are disabled: no admin token is configured", code="admin_disabled")
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("admin routes need 'Authorization: Bearer <token>'", code="missing_token")
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise Unauthorized("invalid admin token", code="invalid_token")


Admin = [Depends(require_admin)]
