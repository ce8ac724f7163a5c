"""FastAPI dependencies: the app's state and the admin bearer-token check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import Forbidden, Unauthorized
from service.state import ServiceState

_bearer = HTTPBearer(auto_error=False, description="The admin token (FORECAST_SERVICE_ADMIN_TOKEN).")


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


State = Annotated[ServiceState, Depends(get_state)]
ClientKey = Annotated[
    str | None,
    Header(alias="X-Client-Key", max_length=256, description="Sticky A/B assignment key."),
]


def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Admin routes need the bearer token; with no token configured they are disabled (403),
    never open. The comparison takes constant time and the token is never echoed."""
    expected = get_state(request).settings.admin_token_value()
    if expected is None:
        raise Forbidden("admin routes are disabled: no admin token is configured", code="admin_disabled")
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("admin routes need 'Authorization: Bearer <token>'", code="missing_token")
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise Unauthorized("invalid admin token", code="invalid_token")


Admin = [Depends(require_admin)]
