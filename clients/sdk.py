"""Python SDK of the Dow30 forecast service: :class:`Client` (sync) and :class:`AsyncClient`.

>>> with Client("http://localhost:8000") as c:
...     f = c.forecast("AAPL")
...     print(f.prediction.bin, f.adapter)
...     short = c.forecast("AAPL", options=PromptOptions(weeks=1, with_financials=False))

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
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from clients.errors import error_from_response
from clients.models import (
    AdapterList,
    AdapterVersion,
    BatchItemError,
    BatchResult,
    Forecast,
    PromptOptions,
    Routing,
    RoutingArm,
    Scorecard,
)
from clients.retry import Attempts, RetryPolicy
from clients.stream import (
    AsyncForecastStream,
    ForecastStream,
    StreamState,
    aiter_batch,
    iter_batch,
)

M = TypeVar("M", bound=BaseModel)
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
CLIENT_KEY_HEADER = "X-Client-Key"
SSE_ACCEPT = {"Accept": "text/event-stream"}


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


def _options(options: PromptOptions | None) -> dict[str, Any]:
    """The prompt options set; those left None take the service's settings."""
    return {} if options is None else options.model_dump(exclude_none=True)


def _post(
    path: str, key: str | None, stream: bool, options: PromptOptions | None, **fields: Any
) -> Call:
    """A forecast request: its fields, then ``stream`` when set, then the prompt options."""
    body = _body(**fields, stream=stream or None) | _options(options)
    headers = _key(key) | (SSE_ACCEPT if stream else {})
    return Call("POST", path, body, headers=headers)


class _Endpoints:
    """The service's routes, written once for both clients."""

    @staticmethod
    def forecast(
        ticker: str, as_of: dt.date | None, adapter: str | None, stream: bool, key: str | None,
        options: PromptOptions | None = None,
    ) -> Call:
        return _post("/v1/forecast", key, stream, options, ticker=ticker, as_of=as_of, adapter=adapter)

    @staticmethod
    def batch(
        tickers: list[str] | None, as_of: dt.date | None, adapter: str | None, key: str | None,
        options: PromptOptions | None = None, *, stream: bool = False,
    ) -> Call:
        fields = {"tickers": tickers, "as_of": as_of, "adapter": adapter}
        return _post("/v1/forecast/batch", key, stream, options, **fields)

    @staticmethod
    def batch_stream(
        tickers: list[str] | None, as_of: dt.date | None, adapter: str | None, key: str | None,
        options: PromptOptions | None = None,
    ) -> Call:
        return _Endpoints.batch(tickers, as_of, adapter, key, options, stream=True)

    adapters = staticmethod(lambda: Call("GET", "/v1/adapters", admin=True))

    @staticmethod
    def load(name: str, version: str | None, promote: bool, alias: str | None) -> Call:
        body = _body(name=name, version=version, promote=promote, alias=alias)
        return Call("POST", "/v1/adapters", body, admin=True)

    @staticmethod
    def promote(alias: str, ref: str) -> Call:
        body = {"alias": alias, "adapter": ref}
        return Call("POST", "/v1/adapters/promote", body, admin=True)

    @staticmethod
    def unload(name: str, version: str) -> Call:
        path = f"/v1/adapters/{_seg(name)}/versions/{_seg(version)}"
        return Call("DELETE", path, admin=True)

    routing = staticmethod(lambda: Call("GET", "/v1/routing", admin=True))

    @staticmethod
    def set_routing(arms: list[RoutingArm], shadow: str | None, shadow_fraction: float) -> Call:
        body = {
            "arms": [{"name": a.name, "adapter": a.adapter, "weight": a.weight} for a in arms],
            "shadow": shadow,
            "shadow_fraction": shadow_fraction,
        }
        return Call("PUT", "/v1/routing", body, admin=True)

    @staticmethod
    def scorecard(name: str, vs: str | None = None) -> Call:
        query = f"?vs={_seg(vs)}" if vs else ""
        return Call("GET", f"/v1/adapters/{_seg(name)}/scorecard{query}")

    score_now = staticmethod(lambda: Call("POST", "/v1/scorecard/score", admin=True))


def reweighted(
    current: Routing, weights: Mapping[str, float], *, keep_others: bool = True
) -> list[RoutingArm]:
    """Arms for new ``weights`` keyed by arm name or alias: existing arms keep their names, a
    new alias becomes an arm named after it, arms not named keep their weight (or are
    dropped when ``keep_others`` is false)."""
    arms = {a.name: a for a in current.arms}
    by_alias = {a.adapter: a.name for a in current.arms}
    named: dict[str, RoutingArm] = {}
    for key, weight in weights.items():
        name = key if key in arms else by_alias.get(key, key)
        adapter = arms[name].adapter if name in arms else key
        named[name] = RoutingArm(name=name, adapter=adapter, weight=weight)
    if not keep_others:
        return list(named.values())
    return [named.get(name, arm) for name, arm in arms.items()] + [
        arm for name, arm in named.items() if name not in arms
    ]


def _seg(value: str) -> str:
    return quote(value, safe="")


def _key(key: str | None) -> dict[str, str]:
    return {CLIENT_KEY_HEADER: key} if key else {}


class _Core:
    """Configuration and request building shared by the two clients."""

    def __init__(
        self, base_url: str, admin_token: str | None, client_key: str | None,
        retry: RetryPolicy, seed: int | None,
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

    def attempts(self) -> Attempts:
        """The retry decisions of one request, under this client's policy."""
        return Attempts(self.retry, self._rng)

    def request(self, http: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
        return http.build_request(call.method, call.path, json=call.json, headers=self.headers(call))


def _decode(response: httpx.Response, model: type[M]) -> M:
    if response.is_error:
        raise error_from_response(response)
    return model.model_validate(response.json())


class Client(_Core):
    """Synchronous client. Use as a context manager or call :meth:`close`."""

    def __init__(
        self, base_url: str = DEFAULT_URL, *, admin_token: str | None = None,
        client_key: str | None = None, timeout: httpx.Timeout | float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None, transport: httpx.BaseTransport | None = None,
        seed: int | None = None, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(base_url, admin_token, client_key, retry or RetryPolicy(), seed)
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
        attempts = self.attempts()
        while True:
            try:
                response = self._http.send(self.request(self._http, call), stream=stream)
            except httpx.TransportError as exc:
                self._sleep(attempts.after_failure(exc))  # or raises the connection error
                continue
            if not response.is_error:
                return response
            response.read()
            response.close()
            self._sleep(attempts.after_answer(response))  # or raises the typed error

    def _json(self, call: Call, model: type[M]) -> M:
        return _decode(self._send(call), model)

    # -- forecasts ---------------------------------------------------------------------------
    def forecast(
        self, ticker: str, *, as_of: dt.date | None = None, adapter: str | None = None,
        client_key: str | None = None, options: PromptOptions | None = None,
    ) -> Forecast:
        call = _Endpoints.forecast(ticker, as_of, adapter, False, self.key(client_key), options)
        return self._json(call, Forecast)

    def stream_forecast(
        self, ticker: str, *, as_of: dt.date | None = None, adapter: str | None = None,
        client_key: str | None = None, options: PromptOptions | None = None,
    ) -> ForecastStream:
        """Server-sent events of one forecast; iterate it, then read ``.result``."""
        call = _Endpoints.forecast(ticker, as_of, adapter, True, self.key(client_key), options)
        started = time.perf_counter()
        return ForecastStream(self._send(call, stream=True), StreamState(started=started))

    def batch(
        self, tickers: list[str] | None = None, *, as_of: dt.date | None = None,
        adapter: str | None = None, client_key: str | None = None,
        options: PromptOptions | None = None,
    ) -> BatchResult:
        call = _Endpoints.batch(tickers, as_of, adapter, self.key(client_key), options)
        return self._json(call, BatchResult)

    def stream_batch(
        self, tickers: list[str] | None = None, *, as_of: dt.date | None = None,
        adapter: str | None = None, client_key: str | None = None,
        options: PromptOptions | None = None,
    ) -> Iterator[Forecast | BatchItemError]:
        """Each ticker's forecast (or error) as soon as it finishes."""
        call = _Endpoints.batch_stream(tickers, as_of, adapter, self.key(client_key), options)
        yield from iter_batch(self._send(call, stream=True))

    # -- adapters and routing (admin) ---------------------------------------------------------
    def list_adapters(self) -> AdapterList:
        return self._json(_Endpoints.adapters(), AdapterList)

    def load_adapter(
        self, name: str, version: str | None = None, *, promote: bool = True,
        alias: str | None = None,
    ) -> AdapterVersion:
        """Load ``name@version`` (newest on disk when None); with ``promote`` it serves
        ``alias`` (default ``name``) at once — a hot-swap when another version served it."""
        return self._json(_Endpoints.load(name, version, promote, alias), AdapterVersion)

    def promote_adapter(self, alias: str, ref: str) -> AdapterVersion:
        """Point ``alias`` at the loaded version ``ref`` (``name@version``)."""
        return self._json(_Endpoints.promote(alias, ref), AdapterVersion)

    def unload_adapter(self, name: str, version: str) -> AdapterVersion:
        return self._json(_Endpoints.unload(name, version), AdapterVersion)

    def routing(self) -> Routing:
        return self._json(_Endpoints.routing(), Routing)

    def set_routing(
        self, arms: list[RoutingArm], *, shadow: str | None = None, shadow_fraction: float = 1.0
    ) -> Routing:
        """Replace the routing table."""
        return self._json(_Endpoints.set_routing(arms, shadow, shadow_fraction), Routing)

    def reweight(
        self, weights: Mapping[str, float], *, shadow: str | None = None, keep_others: bool = True
    ) -> Routing:
        """Change weights by arm name or alias, keeping arm names (see :func:`reweighted`)."""
        current = self.routing()
        arms = reweighted(current, weights, keep_others=keep_others)
        return self.set_routing(
            arms, shadow=shadow or current.shadow, shadow_fraction=current.shadow_fraction
        )

    def scorecard(self, name: str, vs: str | None = None) -> Scorecard:
        """Per-version accuracy, MSE and speed; ``vs``: also test accuracy against the versions
        of that other adapter (e.g. the other A/B arm's)."""
        return self._json(_Endpoints.scorecard(name, vs), Scorecard)

    def score_now(self) -> int:
        """Score every forecast whose target week has closed; the number updated."""
        return int(self._send(_Endpoints.score_now()).json()["updated"])

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
        self, base_url: str = DEFAULT_URL, *, admin_token: str | None = None,
        client_key: str | None = None, timeout: httpx.Timeout | float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None, transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None, seed: int | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        super().__init__(base_url, admin_token, client_key, retry or RetryPolicy(), seed)
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=100)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=transport, limits=limits
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
        attempts = self.attempts()
        while True:
            try:
                response = await self._http.send(self.request(self._http, call), stream=stream)
            except httpx.TransportError as exc:
                await self._sleep(attempts.after_failure(exc))
                continue
            if not response.is_error:
                return response
            await response.aread()
            await response.aclose()
            await self._sleep(attempts.after_answer(response))

    async def _json(self, call: Call, model: type[M]) -> M:
        return _decode(await self._send(call), model)

    async def forecast(
        self, ticker: str, *, as_of: dt.date | None = None, adapter: str | None = None,
        client_key: str | None = None, options: PromptOptions | None = None,
    ) -> Forecast:
        call = _Endpoints.forecast(ticker, as_of, adapter, False, self.key(client_key), options)
        return await self._json(call, Forecast)

    async def stream_forecast(
        self, ticker: str, *, as_of: dt.date | None = None, adapter: str | None = None,
        client_key: str | None = None, options: PromptOptions | None = None,
    ) -> AsyncForecastStream:
        call = _Endpoints.forecast(ticker, as_of, adapter, True, self.key(client_key), options)
        started = time.perf_counter()
        response = await self._send(call, stream=True)
        return AsyncForecastStream(response, StreamState(started=started))

    async def batch(
        self, tickers: list[str] | None = None, *, as_of: dt.date | None = None,
        adapter: str | None = None, client_key: str | None = None,
        options: PromptOptions | None = None,
    ) -> BatchResult:
        call = _Endpoints.batch(tickers, as_of, adapter, self.key(client_key), options)
        return await self._json(call, BatchResult)

    async def stream_batch(
        self, tickers: list[str] | None = None, *, as_of: dt.date | None = None,
        adapter: str | None = None, client_key: str | None = None,
        options: PromptOptions | None = None,
    ) -> AsyncIterator[Forecast | BatchItemError]:
        call = _Endpoints.batch_stream(tickers, as_of, adapter, self.key(client_key), options)
        async for item in aiter_batch(await self._send(call, stream=True)):
            yield item

    async def list_adapters(self) -> AdapterList:
        return await self._json(_Endpoints.adapters(), AdapterList)

    async def load_adapter(
        self, name: str, version: str | None = None, *, promote: bool = True,
        alias: str | None = None,
    ) -> AdapterVersion:
        return await self._json(_Endpoints.load(name, version, promote, alias), AdapterVersion)

    async def promote_adapter(self, alias: str, ref: str) -> AdapterVersion:
        return await self._json(_Endpoints.promote(alias, ref), AdapterVersion)

    async def unload_adapter(self, name: str, version: str) -> AdapterVersion:
        return await self._json(_Endpoints.unload(name, version), AdapterVersion)

    async def routing(self) -> Routing:
        return await self._json(_Endpoints.routing(), Routing)

    async def set_routing(
        self, arms: list[RoutingArm], *, shadow: str | None = None, shadow_fraction: float = 1.0
    ) -> Routing:
        return await self._json(_Endpoints.set_routing(arms, shadow, shadow_fraction), Routing)

    async def reweight(
        self, weights: Mapping[str, float], *, shadow: str | None = None, keep_others: bool = True
    ) -> Routing:
        current = await self.routing()
        arms = reweighted(current, weights, keep_others=keep_others)
        return await self.set_routing(
            arms, shadow=shadow or current.shadow, shadow_fraction=current.shadow_fraction
        )

    async def scorecard(self, name: str, vs: str | None = None) -> Scorecard:
        return await self._json(_Endpoints.scorecard(name, vs), Scorecard)

    async def score_now(self) -> int:
        return int((await self._send(_Endpoints.score_now())).json()["updated"])

    async def healthz(self) -> dict[str, Any]:
        return dict((await self._send(Call("GET", "/healthz"))).json())

    async def readyz(self) -> dict[str, Any]:
        return dict((await self._send(Call("GET", "/readyz"))).json())

    async def metrics(self) -> str:
        return (await self._send(Call("GET", "/metrics"))).text


__all__ = ["AsyncClient", "AsyncForecastStream", "Client", "ForecastStream", "RetryPolicy"]
