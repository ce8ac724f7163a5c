"""One forecast, end to end: prompt → route → adapter lease → engine → parse → log → metrics.

A route makes one call (:meth:`Forecaster.forecast`, :meth:`Forecaster.stream`, or
:func:`service.batch.start_batch`, which calls :meth:`Forecaster.forecast_ticker`). Behind them
one pipeline yields the answer's text deltas as they come, then the stored
:class:`~service.schemas.ForecastResponse` (logged *before* it is yielded, so an acknowledged
forecast is a stored one); the :class:`~service.gateway.Gateway` admits, leases and counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

import anyio

from forecast.answer import ParsedAnswer
from forecast.templates import render_chat
from forecast.universe import require_member
from forecast.windows import BuiltPrompt, WindowConfig
from service.adapters import LoadedAdapter
from service.engine import EngineClient, EngineError
from service.errors import InvalidRequest, Unavailable
from service.forecast_log import ForecastLog, ForecastRow, new_id, prompt_hash
from service.gateway import NO_ADAPTER, Gateway
from service.generation import Answer, answer_params, probe_bin, read_answer
from service.market_gate import MarketGate
from service.prompt_options import ContextCheck, options_of
from service.routing import Route
from service.schemas import ForecastRequest, ForecastResponse, Latency, PromptOptionsIn
from service.settings import SHADOW_ARM, ServiceSettings
from service.telemetry import Telemetry
from service.watchdog import StallWatch

log = logging.getLogger(__name__)

Event = str | ForecastResponse  # a text delta, then the result


@dataclass(frozen=True)
class Prepared:
    """A request whose prompt is built: ready to be sent to any adapter."""

    ticker: str
    window: WindowConfig  # the prompt options it was built with
    built: BuiltPrompt
    started: float  # perf_counter when the request arrived
    build_s: float


@dataclass(frozen=True)
class Stream:
    """An admitted forecast (slot and lease held): exhaust or ``aclose()`` ``events``."""

    arm: str
    events: AsyncGenerator[Event, None]


class Forecaster:
    def __init__(
        self, settings: ServiceSettings, gateway: Gateway, gate: MarketGate,
        forecast_log: ForecastLog, telemetry: Telemetry, now: Callable[[], dt.datetime],
        context: ContextCheck, watch: StallWatch,
    ) -> None:
        self._settings = settings
        self._gateway = gateway
        self._gate = gate  # market data off the shared worker threads, within a deadline
        self._watch = watch  # a hung engine's requests end in 503
        self._log = forecast_log
        self._telemetry = telemetry
        self._now = now
        self._context = context
        self._background: set[asyncio.Task[None]] = set()

    # -- one call per route ---------------------------------------------------------------

    async def forecast(self, request: ForecastRequest, client_key: str | None) -> ForecastResponse:
        prepared, route = await self._request(request, client_key, "forecast")
        return await self._result(prepared, route, "forecast")

    async def stream(self, request: ForecastRequest, client_key: str | None) -> Stream:
        """Admitted before it returns, so over capacity is a 503 (with ``Retry-After``) here,
        before a streamed response has sent its 200."""
        prepared, route = await self._request(request, client_key, "stream")
        events = self._events(prepared, route, "stream")
        admitted = await anext(events)  # a marker; past it only text deltas and the result
        assert admitted is None
        return Stream(route.arm, cast(AsyncGenerator[Event, None], events))

    async def forecast_ticker(
        self, ticker: str, day: dt.date, window: WindowConfig, adapter: str | None,
        client_key: str | None, label: str,
    ) -> ForecastResponse:
        """One forecast of a batch (its day and window resolved once for all)."""
        prepared, route = await self._prepare(ticker, day, window, adapter, client_key, label)
        return await self._result(prepared, route, label)

    # -- before generation ----------------------------------------------------------------

    def resolve_day(self, as_of: dt.date | None) -> dt.date:
        today = self._now().date()
        day = as_of or self._settings.default_as_of or today
        if day > today:
            raise InvalidRequest(f"as_of {day} is in the future (today is {today})", code="future_date")
        return day

    async def window(self, options: PromptOptionsIn) -> WindowConfig:
        return await self._context.window(options)  # 422 for a prompt too long, nothing fetched

    async def _request(
        self, request: ForecastRequest, client_key: str | None, label: str
    ) -> tuple[Prepared, Route]:
        day = self.resolve_day(request.as_of)
        window = await self.window(request)
        return await self._prepare(request.ticker, day, window, request.adapter, client_key, label)

    async def _prepare(
        self, ticker: str, day: dt.date, window: WindowConfig, adapter: str | None,
        client_key: str | None, label: str,
    ) -> tuple[Prepared, Route]:
        """Check membership on ``day``, build the prompt (off the event loop; a slow provider
        ends in 503 at the market gate's deadline), then choose the route."""
        started = time.perf_counter()
        try:
            symbol = require_member(ticker, day)
            built = await self._gate.build(symbol, day, window)
        except Exception as exc:
            self._gateway.count(label, (*NO_ADAPTER, "none"), exc)
            raise
        prepared = Prepared(symbol, window, built, started, time.perf_counter() - started)
        return prepared, self._gateway.route(adapter, client_key)

    # -- the pipeline ---------------------------------------------------------------------

    async def _result(self, prepared: Prepared, route: Route, label: str) -> ForecastResponse:
        result = None
        async with contextlib.aclosing(self._events(prepared, route, label)) as events:
            async for event in events:  # to the end: the lease is released and counted there
                if isinstance(event, ForecastResponse):
                    result = event
        assert result is not None
        return result

    async def _events(
        self, prepared: Prepared, route: Route, label: str
    ) -> AsyncGenerator[Event | None, None]:
        """``None`` once admitted (slot and lease held), then the text deltas and the result."""
        lease = self._gateway.lease(route.alias, arm=route.arm, route_label=label)
        async with lease as (adapter, engine):
            yield None
            async for event in self._generate(prepared, adapter, engine, route):
                yield event
        if route.shadow is not None:
            task = asyncio.get_running_loop().create_task(self._shadow(prepared, route.shadow))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _generate(
        self, prepared: Prepared, adapter: LoadedAdapter, engine: EngineClient, route: Route
    ) -> AsyncIterator[Event]:
        prompt = render_chat(prepared.built.prompt, engine.info.chat_format)
        forecast_id = new_id()
        answer = Answer()
        chunks = engine.generate(prompt, answer_params(self._settings, engine.info), adapter.engine_lora, forecast_id)
        async for delta in answer.collect(self._watch.chunks(adapter.base, chunks)):
            yield delta
        text = answer.text
        read = read_answer(text)
        if read[0] is None and self._settings.probe_unparsed:
            read = await self._probe(engine, prompt, text, adapter, route, forecast_id), read[1]
        latency = Latency(
            prompt_build_s=prepared.build_s, queue_s=answer.queue_s, ttft_s=answer.ttft_s,
            generation_s=answer.generation_s,
            total_s=time.perf_counter() - prepared.started,  # the bin probe included
        )
        response = ForecastResponse.of_answer(
            text, read, prepared.built, id=forecast_id, ticker=prepared.ticker,
            adapter=adapter.ref, base=adapter.base, base_model=adapter.manifest.base_model,
            arm=route.arm, options=options_of(prepared.window), latency=latency,
            generated_tokens=answer.tokens, finish_reason=answer.finish_reason,
        )
        row = ForecastRow.of_response(response, self._now(), prompt_hash(prompt, prepared.window))
        try:
            await anyio.to_thread.run_sync(self._log.add, row)
        except Exception as exc:
            log.exception("forecast log write failed")
            raise Unavailable("the forecast log is unavailable", code="forecast_log_unavailable") from exc
        self._telemetry.observe(response, (adapter.name, adapter.version, route.arm))
        yield response

    async def _probe(
        self, engine: EngineClient, prompt: str, text: str, adapter: LoadedAdapter,
        route: Route, forecast_id: str,
    ) -> ParsedAnswer | None:
        """The cut-off answer with its probed bin; ``None`` when the probe fails, counted
        and logged (the answer stands; only its bin is missing)."""
        try:
            return await probe_bin(engine, self._watch, prompt, text, adapter, forecast_id + "-probe")
        except EngineError as exc:
            self._telemetry.probe_failures.labels(adapter.name, adapter.version, route.arm).inc()
            log.warning("bin probe for %s on %s failed: %s", forecast_id, adapter.ref, exc)
            return None

    # -- shadow traffic -------------------------------------------------------------------

    async def _shadow(self, prepared: Prepared, alias: str) -> None:
        try:
            await self._result(prepared, Route(arm=SHADOW_ARM, alias=alias), "shadow")
        except Exception as exc:
            log.warning("shadow forecast on %s failed: %s", alias, exc)

    async def drain(self) -> None:
        """Wait for shadow forecasts still running (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
