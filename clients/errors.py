"""Typed errors for the SDK, mapped from the service's one error shape.

The service answers every failure as ``{"error": {"type", "message", "code"}}`` with an HTTP
status. :func:`error_from_response` turns that into one exception class per status family so
callers write ``except NotFoundError`` instead of comparing numbers. Transport failures
(refused connection, timeout) get their own classes because no response exists for them.
"""

from __future__ import annotations

import datetime as dt
import json
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class Dow30Error(Exception):
    """Base of everything the SDK raises."""


class APIConnectionError(Dow30Error):
    """The request never got an HTTP answer (refused, reset, DNS)."""


class APITimeoutError(APIConnectionError):
    """The request timed out before an answer arrived."""


class StreamError(Dow30Error):
    """A server-sent-event stream ended badly: an ``error`` event or no final result."""

    def __init__(self, message: str, *, error_type: str = "stream_error", code: Any = None):
        super().__init__(message)
        self.error_type = error_type
        self.code = code


class APIStatusError(Dow30Error):
    """The service answered with a non-2xx status.

    ``error_type``, ``message`` and ``code`` come from the error body when it has the
    service's shape; otherwise ``error_type`` is ``"http_error"`` and ``message`` is the raw
    body (cut to 500 characters).
    """

    status_code: int

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_type: str,
        code: Any = None,
        retry_after: float | None = None,
    ):
        where = f"{error_type}/{code}" if code is not None else error_type
        super().__init__(f"{status_code} {where}: {message}")
        self.status_code = status_code
        self.error_type = error_type
        self.message = message
        self.code = code
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    """400."""


class AuthenticationError(APIStatusError):
    """401: admin token missing or wrong."""


class PermissionDeniedError(APIStatusError):
    """403: admin routes disabled, or a path outside the adapter root."""


class NotFoundError(APIStatusError):
    """404: unknown ticker, adapter or version."""


class ConflictError(APIStatusError):
    """409: e.g. unloading the version an alias serves."""


class PayloadTooLargeError(APIStatusError):
    """413: request body over the service's limit."""


class UnprocessableEntityError(APIStatusError):
    """422: body failed validation, or no data for that date."""


class RateLimitError(APIStatusError):
    """429: slow down; ``retry_after`` says for how long when the service said so."""


class InternalServerError(APIStatusError):
    """500 and other 5xx not listed below."""


class ServiceUnavailableError(APIStatusError):
    """503: engine not ready or over capacity; ``retry_after`` when given."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def error_fields(body: bytes | str) -> tuple[str, str, Any]:
    """``(type, message, code)`` from an error body, tolerating bodies of other shapes."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        payload = json.loads(text)
    except ValueError:
        return "http_error", text[:500], None
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, dict):
            return (
                str(err.get("type") or "http_error"),
                str(err.get("message") or ""),
                err.get("code"),
            )
        if "detail" in payload:  # a bare FastAPI/Starlette error that escaped the handler
            return "http_error", str(payload["detail"])[:500], None
    return "http_error", text[:500], None


def error_from_response(response: httpx.Response) -> APIStatusError:
    """The typed exception for a non-2xx response whose body has been read."""
    error_type, message, code = error_fields(response.content)
    status = response.status_code
    cls = _BY_STATUS.get(status) or (InternalServerError if status >= 500 else APIStatusError)
    return cls(
        message,
        status_code=status,
        error_type=error_type,
        code=code,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )
