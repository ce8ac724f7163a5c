"""One forecast, end to end: prompt → route → adapter lease → engine → parse → log → metrics.

:meth:`Forecaster.events` is the single pipeline behind the plain, streamed, batch and shadow
paths: it yields the answer's text deltas as the engine produces them and then the finished
:class:`~service.schemas.ForecastResponse`. The forecast is written to the log *before* the
response is yielded, so an acknowledged forecast is a stored one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, cast

import anyio

from forecast.answer import (
    PROBE_MAX_TOKENS,
    ParsedAnswer,
    bin_phrases,
    parse_answer,
    probe_text,
    read_partial,
)
from forecast.answer_format import LIMITS, answer_regex
from forecast.errors import AnswerParseError
from forecast.templates import SPECS, ChatFormat, render_chat
from forecast.universe import require_member
from forecast.windows import WEEK, BuiltPrompt, WindowConfig
from service.adapters import AdapterRegistry, LoadedAdapter
from service.admission import Admission
from service.engine import (
    EngineClient,
    EngineDead,
    EngineError,
    EngineRestarting,
    GenerationParams,
    PromptRejected,
)
from service.errors import InvalidRequest, Unavailable, service_error_of
from service.forecast_log import ForecastLog, ForecastRow, new_id, prediction_columns, prompt_hash
from service.market_gate import MarketGate
from service.preflight import window_of
from service.prompt_options import ContextCheck, options_of, resolve_window
from service.routing import Route, Router
from service.schemas import ForecastResponse, Freshness, Latency, Prediction, PromptOptionsIn
from service.settings import DIRECT_ARM, SHADOW_ARM, ServiceSettings
from service.telemetry import Telemetry
from service.watchdog import EngineStalled, StallWatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A request whose prompt is built: ready to be sent to any adapter."""

    ticker: str
    window: WindowConfig  # the prompt options it was built with
    built: BuiltPrompt
    started: float  # perf_counter when the request arrived
    build_s: float


class Forecaster:
    def __init__(
        self,
        settings: ServiceSettings,
        engines: Mapping[str, EngineClient],
        gate: MarketGate,
        registry: AdapterRegistry,
        router: Router,
        forecast_log: ForecastLog,
        telemetry: Telemetry,
        now: Callable[[], dt.datetime],
        context: ContextCheck,
        watch: StallWatch,
    ) -> None:
        self._settings = settings
        self._engines = engines
        self._gate = gate  # market data off the shared worker threads, within a deadline
        self._watch = watch  # a hung engine's requests end in 503
        self._registry = registry
        self._router = router
        self._log = forecast_log
        self._telemetry = telemetry
        self._now = now
        self._context = context
        self._window = window_of(settings)  # the default; a request's options go over it
        self._admission = Admission(
            settings.max_inflight, settings.max_queued, settings.queue_timeout_s,
            settings.retry_after_s,
        )
        self._background: set[asyncio.Task[None]] = set()

    # -- before generation ----------------------------------------------------------------

    def resolve_day(self, as_of: dt.date | None) -> dt.date:
        today = self._now().date()
        day = as_of or self._settings.default_as_of or today
        if day > today:
            raise InvalidRequest(f"as_of {day} is in the future (today is {today})", code="future_date")
        return day

    async def window(self, options: PromptOptionsIn) -> WindowConfig:
        """The request's prompt options over the settings; 422 when they could build a prompt
        too long for an engine's context (nothing fetched yet)."""
        window = resolve_window(options, self._window)
        await self._context.check(window)
        return window

    async def prepare(
        self, ticker: str, day: dt.date, window: WindowConfig, *, route_label: str
    ) -> Prepared:
        """Check membership on ``day`` and build the prompt (off the event loop; a slow
        provider ends in 503 at the market gate's deadline)."""
        started = time.perf_counter()
        try:
            symbol = require_member(ticker, day)
            built = await self._gate.build(symbol, day, window)
        except Exception as exc:
            status = str(service_error_of(exc).status)
            self._telemetry.requests.labels(route_label, "none", "none", "none", status).inc()
            raise
        return Prepared(symbol, window, built, started, time.perf_counter() - started)

    def choose(self, adapter: str | None, client_key: str | None) -> Route:
        if adapter:
            self._registry.resolve(adapter)  # 404 now rather than mid-stream
            return Route(arm=DIRECT_ARM, alias=adapter)
        route = self._router.choose(client_key)
        self._registry.resolve(route.alias)
        return route

    # -- the pipeline ---------------------------------------------------------------------

    async def events(
        self, prepared: Prepared, route: Route, *, route_label: str
    ) -> AsyncGenerator[str | ForecastResponse, None]:
        """Text deltas, then the stored :class:`ForecastResponse`."""
        async with contextlib.aclosing(self._pipeline(prepared, route, route_label)) as pipeline:
            async for event in pipeline:
                if event is not None:
                    yield event

    async def admitted_events(
        self, prepared: Prepared, route: Route, *, route_label: str
    ) -> AsyncGenerator[str | ForecastResponse, None]:
        """:meth:`events` already holding its admission slot and adapter lease, so over
        capacity raises 503 (with ``Retry-After``) here, before a streamed response has sent
        its 200. The caller must exhaust or ``aclose()`` the generator to free the slot."""
        pipeline = self._pipeline(prepared, route, route_label)
        admitted = await anext(pipeline)
        assert admitted is None
        # Past its first (admission) marker the pipeline yields only deltas and the result.
        return cast(AsyncGenerator[str | ForecastResponse, None], pipeline)

    async def _pipeline(
        self, prepared: Prepared, route: Route, route_label: str
    ) -> AsyncGenerator[str | ForecastResponse | None, None]:
        """``None`` once admitted (slot and lease held), then the text deltas and the result."""
        labels = ["none", "none", route.arm]
        try:
            # A slot first (possibly after queueing), then the adapter lease: a queued request
            # holds no adapter version, so a swap never waits on the queue.
            async with self._admission.slot(), self._registry.acquire(route.alias) as adapter:
                labels = [adapter.name, adapter.version, route.arm]
                yield None
                async for event in self._generate(prepared, adapter, route):
                    yield event
        except Exception as exc:
            mapped = _engine_error(exc)
            status = str(service_error_of(mapped).status)
            self._telemetry.requests.labels(route_label, *labels, status).inc()
            if mapped is exc:
                raise
            raise mapped from exc
        self._telemetry.requests.labels(route_label, *labels, "200").inc()
        if route.shadow is not None:
            self._spawn(self._shadow(prepared, route.shadow))

    async def _generate(
        self, prepared: Prepared, adapter: LoadedAdapter, route: Route
    ) -> AsyncIterator[str | ForecastResponse]:
        engine = self._engines[adapter.base]
        fmt = engine.info.chat_format
        prompt = render_chat(prepared.built.prompt, fmt)
        structured = self._settings.structured_answers and engine.info.structured_output
        params = GenerationParams(
            max_tokens=self._settings.max_new_tokens,
            temperature=self._settings.temperature,
            seed=self._settings.seed if self._settings.temperature > 0 else None,
            stop=(SPECS[fmt].eos,),
            regex=structured_regex(fmt, self._settings.max_new_tokens) if structured else None,
        )
        forecast_id = new_id()
        submitted = time.perf_counter()
        first: float | None = None
        queue_s: float | None = None
        tokens = 0
        pieces: list[str] = []
        stream = engine.generate(prompt, params, adapter.lora, forecast_id)
        async for chunk in self._watch.chunks(adapter.base, stream):
            if first is None and (chunk.delta or chunk.tokens):
                first = time.perf_counter()
            if chunk.queue_s is not None:
                queue_s = chunk.queue_s
            tokens = chunk.tokens
            if chunk.delta:
                pieces.append(chunk.delta)
                yield chunk.delta
        generated = time.perf_counter()  # decode rate: the answer's own tokens and time
        text = "".join(pieces)
        parsed, parse_error = _parse(text)
        if parsed is None and self._settings.probe_unparsed:
            parsed = await self._probe(engine, prompt, text, adapter, route, forecast_id)
        latency = Latency(
            prompt_build_s=prepared.build_s,
            queue_s=queue_s,
            ttft_s=None if first is None else first - submitted,
            generation_s=None if first is None else generated - first,
            total_s=time.perf_counter() - prepared.started,  # the bin probe included
        )
        response = self._response(
            forecast_id, prepared, adapter, route, text, (parsed, parse_error), latency, tokens
        )
        await self._store(response, prepared, adapter, route, prompt)
        self._observe(response, adapter, route)
        yield response

    def _response(
        self,
        forecast_id: str,
        prepared: Prepared,
        adapter: LoadedAdapter,
        route: Route,
        text: str,
        read: tuple[ParsedAnswer | None, str | None],
        latency: Latency,
        tokens: int,
    ) -> ForecastResponse:
        built = prepared.built
        parsed, parse_error = read
        prediction = None
        if parsed is not None:
            low, high = parsed.prediction.percent_range
            source = parsed.prediction_source
            prediction = Prediction(
                direction="up" if parsed.prediction.is_up else "down",
                bin=parsed.prediction.value, percent_low=low, percent_high=high,
                text=parsed.prediction_text, source="line" if source == "label" else source,
            )
        return ForecastResponse(
            id=forecast_id,
            ticker=prepared.ticker,
            company=built.prompt.profile.name,
            as_of=built.prompt.as_of,
            week_start=built.prompt.as_of,
            week_end=built.prompt.as_of + WEEK,
            prediction=prediction,
            parse_error=parse_error,
            positive_developments=parsed.positive if parsed else None,
            concerns=parsed.concerns if parsed else None,
            analysis=parsed.analysis if parsed else None,
            raw_text=text,
            adapter=adapter.ref,
            base=adapter.base,
            base_model=adapter.manifest.base_model,
            arm=route.arm,
            options=options_of(prepared.window),
            freshness=Freshness(
                stale=bool(built.stale_sources),
                stale_sources=list(built.stale_sources),
                sources=dict(built.sources),
            ),
            latency=latency,
            generated_tokens=tokens,
        )

    async def _store(
        self,
        r: ForecastResponse,
        prepared: Prepared,
        adapter: LoadedAdapter,
        route: Route,
        prompt: str,
    ) -> None:
        from forecast.bins import Bin

        row = ForecastRow(
            id=r.id, created_at=self._now(), route="shadow" if route.arm == SHADOW_ARM else "api",
            ticker=r.ticker, as_of=r.as_of, target_end=r.week_end, adapter=adapter.name,
            version=adapter.version, base=adapter.base, base_model=r.base_model, arm=route.arm,
            shadow=route.arm == SHADOW_ARM, prompt_hash=prompt_hash(prompt, prepared.window),
            weeks=prepared.window.weeks, news_per_week=prepared.window.news_per_week,
            with_financials=prepared.window.with_financials,
            raw_text=r.raw_text, parse_error=r.parse_error,
            stale_sources=",".join(r.freshness.stale_sources),
            prompt_build_s=r.latency.prompt_build_s, queue_s=r.latency.queue_s,
            ttft_s=r.latency.ttft_s, generation_s=r.latency.generation_s,
            total_s=r.latency.total_s, generated_tokens=r.generated_tokens,
            **prediction_columns(
                Bin(r.prediction.bin) if r.prediction else None,
                r.prediction.source if r.prediction else None,
            ),
        )
        try:
            await anyio.to_thread.run_sync(self._log.add, row)
        except Exception as exc:
            log.exception("forecast log write failed")
            raise Unavailable("the forecast log is unavailable", code="forecast_log_unavailable") from exc

    def _observe(self, r: ForecastResponse, adapter: LoadedAdapter, route: Route) -> None:
        t = self._telemetry
        labels = (adapter.name, adapter.version, route.arm)
        t.forecasts.labels(*labels).inc()
        t.tokens.labels(*labels).inc(r.generated_tokens)
        lat = r.latency
        for histogram, value in (
            (t.latency, lat.total_s), (t.ttft, lat.ttft_s), (t.queue, lat.queue_s),
            (t.generation, lat.generation_s), (t.prompt_build, lat.prompt_build_s),
        ):
            if value is not None:
                histogram.labels(*labels).observe(value)
        if lat.generation_s and r.generated_tokens > 1:
            t.decode_rate.labels(*labels).observe((r.generated_tokens - 1) / lat.generation_s)
        if r.parse_error is not None:
            t.parse_failures.labels(*labels).inc()
        if r.prediction is not None and r.prediction.source == "probe":
            t.probes.labels(*labels).inc()
        for source in r.freshness.stale_sources:
            t.stale.labels(source).inc()

    async def _probe(
        self,
        engine: EngineClient,
        prompt: str,
        text: str,
        adapter: LoadedAdapter,
        route: Route,
        forecast_id: str,
    ) -> ParsedAnswer | None:
        """The bin the model picks (constrained to the twelve phrases) after its own cut-off
        answer and the Prediction header; ``None`` when that fails too, counted and logged."""
        params = GenerationParams(max_tokens=PROBE_MAX_TOKENS, temperature=0.0, choices=tuple(bin_phrases()))
        pieces: list[str] = []
        try:
            probe = engine.generate(
                prompt + probe_text(text), params, adapter.lora, forecast_id + "-probe"
            )
            async for chunk in self._watch.chunks(adapter.base, probe):
                pieces.append(chunk.delta)
        except EngineError as exc:  # the answer stands; only its bin is missing
            self._telemetry.probe_failures.labels(adapter.name, adapter.version, route.arm).inc()
            log.warning("bin probe for %s on %s failed: %s", forecast_id, adapter.ref, exc)
            return None
        return read_partial(text, "".join(pieces))

    # -- shadow traffic -------------------------------------------------------------------

    async def _shadow(self, prepared: Prepared, alias: str) -> None:
        try:
            async for _ in self.events(prepared, Route(arm=SHADOW_ARM, alias=alias), route_label="shadow"):
                pass
        except Exception as exc:
            log.warning("shadow forecast on %s failed: %s", alias, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for shadow forecasts still running (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


def _parse(text: str) -> tuple[ParsedAnswer | None, str | None]:
    try:
        return parse_answer(text), None
    except AnswerParseError as exc:
        return None, str(exc)


def _engine_error(exc: Exception) -> Exception:
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


@functools.lru_cache(maxsize=16)
def structured_regex(fmt: ChatFormat, max_tokens: int) -> str:
    """The FinGPT answer expression with bounds fitted to ``max_tokens`` (one string per
    format and budget, so the engine's grammar cache compiles it once)."""
    return answer_regex(fmt, LIMITS.fitting(max_tokens, fmt))
