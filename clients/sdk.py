"""Python SDK of the Dow30 forecast service: :class:`Client` (sync) and :class:`AsyncClient`.

>>> with Client("http://localhost:8000") as c:
...     f = c.forecast("AAPL")
...     print(f.prediction.bin, f.adapter)

Both clients share one request description per endpoint (:class:`_Endpoints`) and one
decoder; they differ only in how they send and sleep. Retries follow
:class:`~clients.retry.RetryPolicy` (429/503 honouring ``Retry-After``, refused connections),
non-2xx answers raise the typed errors of :mod:`clients.errors`, and ``stream_forecast``
yields server-sent events with the structured result at the end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel

from clients.errors import APIConnectionError, APITimeoutError, error_from_response
from clients.models import (
    AdapterList,
    AdapterVersion,
    BatchResult,
    Forecast,
    Routing,
    Scorecard,
)
from clients.retry import RetryPolicy
from clients.stream import AsyncForecastStream, ForecastStream, StreamState

M = TypeVar("M", bound=BaseModel)
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
CLIENT_KEY_HEADER = "X-Client-Key"


@dataclass(frozen=True)
class Call:
    """One HTTP call to make: everything but the transport."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    admin: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def _body(**fields: Any) -> dict[str, Any]:
    """A JSON body without the fields left as None (the service then applies its default)."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None:
            continue
        out[key] = value.isoformat() if isinstance(value, dt.date) else value
    return out


class _Endpoints:
    """The service's routes, written once for both clients."""

    @staticmethod
    def forecast(
        ticker: str, as_of: dt.date | None, adapter: str | None, stream: bool, key: str | None
    ) -> Call:
        body = _body(ticker=ticker, as_of=as_of, adapter=adapter, stream=stream or None)
        headers = {CLIENT_KEY_HEADER: key} if key else {}
        if stream:
            headers["Accept"] = "text/event-stream"
        return Call("POST", "/v1/forecast", body, headers=headers)

    @staticmethod
    def batch(
        tickers: list[str] | None, as_of: dt.date | None, adapter: str | None, key: str | None
    ) -> Call:
        body = _body(tickers=tickers, as_of=as_of, adapter=adapter)
        return Call("POST", "/v1/forecast/batch", body, headers=_key(key))

    adapters = staticmethod(lambda: Call("GET", "/v1/adapters", admin=True))

    @staticmethod
    def load(name: str, version: str | None) -> Call:
        return Call("POST", "/v1/adapters/load", _body(name=name, version=version), admin=True)

    @staticmethod
    def promote(name: str, version: str, alias: str | None) -> Call:
        body = _body(name=name, version=version, alias=alias)
        return Call("POST", "/v1/adapters/promote", body, admin=True)

    @staticmethod
    def unload(name: str, version: str) -> Call:
        body = _body(name=name, version=version)
        return Call("POST", "/v1/adapters/unload", body, admin=True)

    routing = staticmethod(lambda: Call("GET", "/v1/routing", admin=True))

    @staticmethod
    def set_routing(weights: dict[str, float], shadow: str | None) -> Call:
        arms = [{"name": a, "adapter": a, "weight": w} for a, w in weights.items()]
        return Call("PUT", "/v1/routing", {"arms": arms, "shadow": shadow}, admin=True)

    @staticmethod
    def scorecard(name: str) -> Call:
        return Call("GET", f"/v1/adapters/{name}/scorecard")


def _key(key: str | None) -> dict[str, str]:
    return {CLIENT_KEY_HEADER: key} if key else {}


class _Core:
    """Configuration and request building shared by the two clients."""

    def __init__(
        self,
        base_url: str,
        *,
        admin_token: str | None,
        client_key: str | None,
        retry: RetryPolicy,
        seed: int | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._admin_token = admin_token
        self.client_key = client_key
        self.retry = retry
        self._rng = random.Random(seed)

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}({self.base_url!r})"

    def headers(self, call: Call) -> dict[str, str]:
        headers = dict(call.headers)
        if call.admin and self._admin_token:
            headers["Authorization"] = f"Bearer {self._admin_token}"
        return headers

    def key(self, client_key: str | None) -> str | None:
        return client_key if client_key is not None else self.client_key

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        return self.retry.delay(attempt, retry_after, self._rng)


def _decode(response: httpx.Response, model: type[M]) -> M:
    if response.is_error:
        raise error_from_response(response)
    return model.model_validate(response.json())


def _connection_error(exc: httpx.TransportError) -> APIConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"{type(exc).__name__}: {exc}")
    return APIConnectionError(f"{type(exc).__name__}: {exc}")


def _retryable_transport(exc: httpx.TransportError) -> bool:
    """Only failures where the request surely did not reach the service."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


class Client(_Core):
    """Synchronous client. Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        admin_token: str | None = None,
        client_key: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        seed: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            base_url, admin_token=admin_token, client_key=client_key,
            retry=retry or RetryPolicy(), seed=seed,
        )  # fmt: skip
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._sleep = sleep

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        """Send with retries; a streamed response is returned open (status already checked)."""
        attempt = 0
        while True:
            request = self._http.build_request(
                call.method, call.path, json=call.json, headers=self.headers(call)
            )
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if _retryable_transport(exc) and attempt < self.retry.max_retries:
                    self._sleep(self.backoff(attempt, None))
                    attempt += 1
                    continue
                raise _connection_error(exc) from exc
            if not response.is_error:
                return response
            response.read()
            response.close()
            if not self.retry.should_retry_status(response.status_code, attempt):
                raise error_from_response(response)
            retry_after = error_from_response(response).retry_after
            self._sleep(self.backoff(attempt, retry_after))
            attempt += 1

    def _json(self, call: Call, model: type[M]) -> M:
        return _decode(self._send(call), model)

    # -- forecasts ---------------------------------------------------------------------------
    def forecast(
        self,
        ticker: str,
        *,
        as_of: dt.date | None = None,
        adapter: str | None = None,
        client_key: str | None = None,
    ) -> Forecast:
        call = _Endpoints.forecast(ticker, as_of, adapter, False, self.key(client_key))
        return self._json(call, Forecast)

    def stream_forecast(
        self,
        ticker: str,
        *,
        as_of: dt.date | None = None,
        adapter: str | None = None,
        client_key: str | None = None,
    ) -> ForecastStream:
        """Server-sent events of one forecast; iterate it, then read ``.result``."""
        call = _Endpoints.forecast(ticker, as_of, adapter, True, self.key(client_key))
        started = time.perf_counter()
        response = self._send(call, stream=True)
        return ForecastStream(response, StreamState(started=started))

    def batch(
        self,
        tickers: list[str] | None = None,
        *,
        as_of: dt.date | None = None,
        adapter: str | None = None,
        client_key: str | None = None,
    ) -> BatchResult:
        call = _Endpoints.batch(tickers, as_of, adapter, self.key(client_key))
        return self._json(call, BatchResult)

    # -- adapters and routing (admin) ---------------------------------------------------------
    def list_adapters(self) -> AdapterList:
        return self._json(_Endpoints.adapters(), AdapterList)

    def load_adapter(self, name: str, version: str | None = None) -> AdapterVersion:
        return self._json(_Endpoints.load(name, version), AdapterVersion)

    def promote_adapter(self, name: str, version: str, alias: str | None = None) -> AdapterList:
        return self._json(_Endpoints.promote(name, version, alias), AdapterList)

    def unload_adapter(self, name: str, version: str) -> AdapterList:
        return self._json(_Endpoints.unload(name, version), AdapterList)

    def routing(self) -> Routing:
        return self._json(_Endpoints.routing(), Routing)

    def set_routing(self, weights: dict[str, float], *, shadow: str | None = None) -> Routing:
        return self._json(_Endpoints.set_routing(weights, shadow), Routing)

    def scorecard(self, name: str) -> Scorecard:
        return self._json(_Endpoints.scorecard(name), Scorecard)

    # -- health ------------------------------------------------------------------------------
    def healthz(self) -> dict[str, Any]:
        return dict(self._send(Call("GET", "/healthz")).json())

    def readyz(self) -> dict[str, Any]:
        return dict(self._send(Call("GET", "/readyz")).json())

    def metrics(self) -> str:
        return self._send(Call("GET", "/metrics")).text


class AsyncClient(_Core):
    """Asynchronous client with the same methods as :class:`Client`, awaitable."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        admin_token: str | None = None,
        client_key: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
        seed: int | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        super().__init__(
            base_url, admin_token=admin_token, client_key=client_key,
            retry=retry or RetryPolicy(), seed=seed,
        )  # fmt: skip
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            limits=limits or httpx.Limits(max_connections=100, max_keepalive_connections=100),
        )
        self._sleep = sleep

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            request = self._http.build_request(
                call.method, call.path, json=call.json, headers=self.headers(call)
            )
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if _retryable_transport(exc) and attempt < self.retry.max_retries:
                    await self._sleep(self.backoff(attempt, None))
                    attempt += 1
                    continue
                raise _connection_error(exc) from exc
            if not response.is_error:
                return response
            await response.aread()
            await response.aclose()
            if not self.retry.should_retry_status(response.status_code, attempt):
                raise error_from_response(response)
            retry_after = error_from_response(response).retry_after
            await self._sleep(self.backoff(attempt, retry_after))
            attempt += 1

    async def _json(self, call: Call, model: type[M]) -> M:
        return _decode(await self._send(call), model)

    async def forecast(
        self,
        ticker: str,
        *,
        as_of: dt.date | None = None,
        adapter: str | None = None,
        client_key: str | None = None,
    ) -> Forecast:
        call = _Endpoints.forecast(ticker, as_of, adapter, False, self.key(client_key))
        return await self._json(call, Forecast)

    async def stream_forecast(
        self,
        ticker: str,
        *,
        as_of: dt.date | None = None,
        adapter: str | None = None,
        client_key: str | None = None,
    ) -> AsyncForecastStream:
        call = _Endpoints.forecast(ticker, as_of, adapter, True, self.key(client_key))
        started = time.perf_counter()
        response = await self._send(call, stream=True)
        return AsyncForecastStream(response, StreamState(started=started))

    async def batch(
        self,
        tickers: list[str] | None = None,
        *,
        as_of: dt.date | None = None,
        adapter: str | None = None,
        client_key: str | None = None,
    ) -> BatchResult:
        call = _Endpoints.batch(tickers, as_of, adapter, self.key(client_key))
        return await self._json(call, BatchResult)

    async def list_adapters(self) -> AdapterList:
        return await self._json(_Endpoints.adapters(), AdapterList)

    async def load_adapter(self, name: str, version: str | None = None) -> AdapterVersion:
        return await self._json(_Endpoints.load(name, version), AdapterVersion)

    async def promote_adapter(
        self, name: str, version: str, alias: str | None = None
    ) -> AdapterList:
        return await self._json(_Endpoints.promote(name, version, alias), AdapterList)

    async def unload_adapter(self, name: str, version: str) -> AdapterList:
        return await self._json(_Endpoints.unload(name, version), AdapterList)

    async def routing(self) -> Routing:
        return await self._json(_Endpoints.routing(), Routing)

    async def set_routing(self, weights: dict[str, float], *, shadow: str | None = None) -> Routing:
        return await self._json(_Endpoints.set_routing(weights, shadow), Routing)

    async def scorecard(self, name: str) -> Scorecard:
        return await self._json(_Endpoints.scorecard(name), Scorecard)

    async def healthz(self) -> dict[str, Any]:
        return dict((await self._send(Call("GET", "/healthz"))).json())

    async def readyz(self) -> dict[str, Any]:
        return dict((await self._send(Call("GET", "/readyz"))).json())

    async def metrics(self) -> str:
        return (await self._send(Call("GET", "/metrics"))).text


__all__ = ["AsyncClient", "AsyncForecastStream", "Client", "ForecastStream", "RetryPolicy"]
