"""``create_app(settings, engines, market)``: the FastAPI app over already-started engines.

The app owns no engine it was given: the caller (``service.main`` or a test) starts them,
passes them in keyed by base (``"llama"``, ``"deepseek"``), and shuts them down. With a
``restart`` hook the app replaces dead engines itself, and closes those replacements. Nothing here reads the
environment; time and randomness are injectable so tests are exact.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forecast.providers.base import MarketData
from service.adapters import AdapterRegistry
from service.engine import EngineClient, EngineStats
from service.errors import error_body, install_error_handlers
from service.forecast_log import ForecastLog
from service.forecaster import Forecaster
from service.gateway import Gateway
from service.market_gate import MarketGate
from service.openai_serving import OpenAIServing
from service.preflight import load_tokenizer
from service.prompt_options import ContextCheck, TokenizerFor
from service.readiness import Readiness
from service.routes import (
    adapters,
    batch,
    forecast,
    health,
    openai,
    page,
    routing,
    scorecard,
    universe,
)
from service.routing import Router
from service.scoring import Scorer
from service.settings import ServiceSettings
from service.state import ServiceState
from service.supervisor import EngineStarter, EngineSupervisor
from service.telemetry import Telemetry
from service.watchdog import StallWatch


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def folding(settings: ServiceSettings) -> bool:
    """Whether the promoted versions are folded: the setting, or (unset) whether the engines
    run on a GPU."""
    if settings.fold_promoted is not None:
        return settings.fold_promoted
    from service.engine_args import on_gpu

    return on_gpu()


def create_app(
    settings: ServiceSettings,
    engines: Mapping[str, EngineClient],
    market: MarketData,
    *,
    now: Callable[[], dt.datetime] = utc_now,
    rng: random.Random | None = None,
    restart: EngineStarter | None = None,
    tokenizer_for: TokenizerFor = load_tokenizer,
) -> FastAPI:
    """With ``restart`` (start a fresh engine for a base), a dead engine is replaced while the
    app runs (:mod:`service.supervisor`); without it, it stays dead and readiness red.
    ``tokenizer_for`` counts prompt tokens when a request asks for a larger prompt window than
    the settings' (:mod:`service.prompt_options`); it is called only then, once per tokenizer."""
    for base, engine in engines.items():
        if engine.info.base != base:
            raise ValueError(f"engine keyed {base!r} serves base {engine.info.base!r}")
    engines = dict(engines)  # the app's own map: the supervisor swaps engines in it
    telemetry = Telemetry()
    registry = AdapterRegistry(
        settings.adapter_root, engines, telemetry,
        fold_dir=settings.fold_dir if folding(settings) else None,
        fold_drain_timeout_s=settings.fold_drain_timeout_s,
    )
    router = Router(telemetry, salt=settings.routing_salt, rng=rng)
    forecast_log = ForecastLog(settings.db_url)
    scorer = Scorer(forecast_log, market.prices, telemetry, now)
    context = ContextCheck(settings, engines, tokenizer_for)
    gate = MarketGate(
        market, telemetry, threads=settings.provider_threads,
        deadline_s=settings.provider_deadline_s, retry_after_s=settings.retry_after_s,
    )
    watch = StallWatch(settings.engine_stall_s, settings.retry_after_s)
    gateway = Gateway(settings, engines, registry, router, telemetry)
    forecaster = Forecaster(settings, gateway, gate, forecast_log, telemetry, now, context, watch)
    serving = OpenAIServing(settings, engines, gateway, registry, router, context, telemetry, watch, now)
    readiness = Readiness(settings.ready_probe_s, settings.ready_timeout_s)
    supervisor = None
    if restart is not None:
        supervisor = EngineSupervisor(
            engines, registry, readiness, telemetry, restart, watch,
            check_s=settings.engine_check_s, backoff_s=settings.restart_backoff_s,
            backoff_max_s=settings.restart_backoff_max_s, retry_after_s=settings.retry_after_s,
        )
    state = ServiceState(
        settings=settings, engines=engines, market=market, telemetry=telemetry,
        registry=registry, router=router, forecast_log=forecast_log, scorer=scorer,
        gateway=gateway, forecaster=forecaster, openai=serving, readiness=readiness, now=now, market_gate=gate,
        stall_watch=watch, supervisor=supervisor,
    )
    telemetry.watch(
        lambda: {base: e.stats() for base, e in engines.items()},
        lambda: cache_counters(market),
    )
    telemetry.export_engine_metrics(lambda: engines)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="Dow30 weekly forecaster",
        version="0.1.0",
        description="Next-week Dow 30 forecasts from LoRA adapters on vLLM, with hot-swap, "
        "A/B routing, Prometheus metrics and realized-accuracy scorecards.",
        lifespan=lifespan,
    )
    app.state.service = state
    install_error_handlers(app)
    for module in (forecast, batch, openai, adapters, routing, scorecard, health, universe, page):
        app.include_router(module.router)
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s
    )
    return app


def cache_counters(market: MarketData) -> dict[str, int]:
    """``hits``/``misses``/``stale_serves`` of a caching market (the snapshot has none)."""
    return {
        key: int(getattr(market, key))
        for key in ("hits", "misses", "stale_serves")
        if isinstance(getattr(market, key, None), int)
    }


def engine_stats(engines: Mapping[str, EngineClient]) -> dict[str, EngineStats]:
    return {base: e.stats() for base, e in engines.items()}


class BodyLimit:
    """413 for bodies over ``max_bytes``, by Content-Length or while streaming in; 408 for a
    body not fully in within ``timeout_s`` of the request's start, so a client that sends
    headers and part of a body cannot hold a connection open indefinitely.

    The body is read here, up to the limit, before the app sees the request: raising from
    inside the app's ``receive`` would reach FastAPI's body parser, which turns any error
    into a 400. The limit is small (64 KiB by default), so buffering is cheap."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(send)
            return
        body = bytearray()
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # the client left before its body was in
                    body += message.get("body", b"")
                    if len(body) > self.max_bytes:
                        await self._too_large(send)
                        return
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            why = f"request body not received within {self.timeout_s:g} s"
            await _reject(send, 408, "invalid_request_error", why, "request_timeout")
            return
        first: Message | None = {"type": "http.request", "body": bytes(body), "more_body": False}

        async def replay() -> Message:
            nonlocal first
            if first is not None:
                message, first = first, None
                return message
            return await receive()  # after the body: the disconnect, for streamed answers

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        message = f"body over {self.max_bytes} bytes"
        await _reject(send, 413, "invalid_request_error", message, "payload_too_large")


async def _reject(send: Send, status: int, type_: str, message: str, code: str) -> None:
    """Answer in the one error shape from the ASGI layer, before the app has run."""
    body = json.dumps(error_body(type_, message, code)).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
