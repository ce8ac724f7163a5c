"""Typed errors of the service and the one handler that shapes them.

Every failure leaves the service as ``{"error": {"type", "message", "code"}}`` (the OpenAI
API's shape) with an HTTP status taken from the exception class; the OpenAI-compatible routes
(``service.routes.openai``) add the API's ``param`` and answer 400 where the rest answer 422
(:func:`openai_response`). Domain errors from
``forecast.errors``, engine failures during generation and request-validation errors are
mapped here too, so no route builds an
error body by hand. Messages never carry secrets: the admin token is compared, not echoed.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from forecast.errors import (
    NoDataError,
    ProviderAuthError,
    ProviderError,
    RateLimitedError,
    UnknownTickerError,
)
from forecast.providers.cache import redact_secrets
from service.engine import EngineDead, EngineError, EngineRestarting, PromptRejected
from service.watchdog import EngineStalled

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base class: ``status`` and ``type`` are per class, ``code`` per raise site."""

    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"
    default_headers: ClassVar[dict[str, str]] = {}

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param  # the request field at fault (the OpenAI-compatible routes show it)
        self.headers: dict[str, str] | None = dict(self.default_headers) or None
        if code is not None:
            self.code = code


class InvalidRequest(ServiceError):
    status, type, code = 422, "invalid_request_error", "invalid_request"


class BadRequest(ServiceError):
    status, type, code = 400, "invalid_request_error", "bad_request"


class NotFound(ServiceError):
    status, type, code = 404, "not_found_error", "not_found"


class Conflict(ServiceError):
    status, type, code = 409, "conflict_error", "conflict"


class PayloadTooLarge(ServiceError):
    status, type, code = 413, "invalid_request_error", "payload_too_large"


class Unauthorized(ServiceError):
    status, type, code = 401, "authentication_error", "invalid_token"
    default_headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class Forbidden(ServiceError):
    status, type, code = 403, "permission_error", "forbidden"


class Unavailable(ServiceError):
    """503 with ``Retry-After``: not ready, over capacity, or an upstream is down."""

    status, type, code = 503, "service_unavailable", "unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after_s: int = 1) -> None:
        super().__init__(message, code=code)  # no param: nothing in the request is at fault
        self.headers = {"Retry-After": str(max(1, retry_after_s))}


class AdapterError(ServiceError):
    """An adapter cannot be loaded: bad manifest, wrong base, engine refused it."""

    status, type, code = 422, "adapter_error", "adapter_load_failed"


def error_body(type_: str, message: str, code: str | int | None) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, "code": code}}


def service_error_of(exc: BaseException) -> ServiceError:
    """Map any exception to the :class:`ServiceError` the client sees."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, UnknownTickerError):
        return NotFound(str(exc), code="unknown_ticker")
    if isinstance(exc, NoDataError):
        return InvalidRequest(str(exc), code="no_data")
    # Providers mask their keys; ``token=``/``apikey=`` values are masked here again.
    if isinstance(exc, RateLimitedError):
        return Unavailable(
            f"market data provider rate-limited: {redact_secrets(str(exc))}",
            code="provider_rate_limited",
        )
    if isinstance(exc, ProviderAuthError):
        # Never echo provider messages here: they may quote credentials.
        return Unavailable("market data provider refused our credentials", code="provider_auth")
    if isinstance(exc, ProviderError):
        return Unavailable(
            f"market data provider failed: {redact_secrets(str(exc))}", code="provider_error"
        )
    return ServiceError("internal error")


def engine_error_of(exc: Exception) -> Exception:
    """The service error an engine failure during generation answers with (``exc`` itself
    when it is not one): 503 while the engine is hung, restarting or down, 422 for a prompt
    it refused."""
    if isinstance(exc, EngineStalled):
        return Unavailable(str(exc), code="engine_stalled", retry_after_s=exc.retry_after_s)
    if isinstance(exc, EngineRestarting):
        return Unavailable(str(exc), code="engine_restarting", retry_after_s=exc.retry_after_s)
    if isinstance(exc, EngineDead):
        return Unavailable(str(exc), code="engine_unavailable")
    if isinstance(exc, PromptRejected):
        return InvalidRequest(f"the engine rejected the prompt: {exc}", code="prompt_rejected")
    if isinstance(exc, EngineError):
        return Unavailable(str(exc), code="engine_error")
    return exc


def http_error_of(exc: StarletteHTTPException) -> ServiceError:
    """The service error of a framework ``HTTPException`` (no route, a body not UTF-8...)."""
    kinds = {404: NotFound, 405: BadRequest, 413: PayloadTooLarge, 401: Unauthorized}
    err = kinds.get(exc.status_code, BadRequest)(str(exc.detail))
    err.status = exc.status_code
    if exc.status_code == 405:
        err.code = "method_not_allowed"
    return err


def openai_error(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """Status, body and headers of ``exc`` in the OpenAI API's own shape, ``{"error":
    {"message", "type", "param", "code"}}``: what the OpenAI-compatible routes answer. An
    invalid request is a 400 there (the API's status for it, which its clients raise as
    ``BadRequestError``)."""
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        exc = BadRequest(validation_message(exc), code="invalid_request", param=param)
    elif isinstance(exc, StarletteHTTPException):
        exc = http_error_of(exc)
    err = _logged(exc)
    status = 400 if err.status == 422 else err.status
    body = {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}
    return status, body, err.headers


def openai_response(exc: Exception) -> JSONResponse:
    status, body, headers = openai_error(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def _logged(exc: Exception) -> ServiceError:
    """The service error of ``exc``, logged when it is a bug or a failing dependency."""
    err = service_error_of(exc)
    if not isinstance(exc, ServiceError):
        if type(err) is ServiceError:  # unmapped: a bug, keep the trace
            log.error("unhandled %s", type(exc).__name__, exc_info=exc)
        elif err.status >= 500:  # a failing dependency: its masked message, no trace
            log.warning("%s: %s", err.code, err.message)
    return err


def _response(err: ServiceError) -> JSONResponse:
    return JSONResponse(
        error_body(err.type, err.message, err.code), status_code=err.status, headers=err.headers
    )


def validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """The one place where exceptions become HTTP responses."""

    async def on_service_error(_: Request, exc: Exception) -> JSONResponse:
        return _response(_logged(exc))

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _response(InvalidRequest(validation_message(exc)))

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _response(http_error_of(exc))

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    for cls in (ServiceError, UnknownTickerError, NoDataError, ProviderError, Exception):
        app.add_exception_handler(cls, on_service_error)
