"""``POST /v1/forecast/batch``: many tickers at once, results in the order they finish."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from sse_starlette import EventSourceResponse

from forecast.universe import members
from forecast.windows import WindowConfig
from service.deps import ClientKey, State
from service.errors import InvalidRequest, service_error_of
from service.forecaster import Forecaster
from service.routes.forecast import ERRORS
from service.schemas import BatchItemError, BatchRequest, BatchResponse, ForecastResponse

router = APIRouter(prefix="/v1", tags=["forecast"])

Outcome = tuple[str, ForecastResponse | BatchItemError]


@router.post(
    "/forecast/batch",
    response_model=BatchResponse,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
)
async def batch(body: BatchRequest, state: State, client_key: ClientKey = None) -> Any:
    """Forecasts for ``tickers`` (default: the Dow 30 of that date), all submitted to the
    engines at once. JSON lists them in completion order; ``stream: true`` sends a ``result``
    or ``error`` event per ticker as each finishes, then ``done``."""
    f = state.forecaster
    day = f.resolve_day(body.as_of)
    window = await f.window(body)  # one window for every ticker, checked before any fetch
    tickers = list(dict.fromkeys(t.strip().upper() for t in (body.tickers or members(day))))
    if len(tickers) > state.settings.max_batch:
        raise InvalidRequest(f"at most {state.settings.max_batch} tickers", code="batch_too_large")
    if body.adapter:
        state.registry.resolve(body.adapter)
    outcomes = run_batch(f, tickers, day, window, body.adapter, client_key)
    if body.stream:
        return EventSourceResponse(sse(outcomes, day))
    forecasts: list[ForecastResponse] = []
    errors: list[BatchItemError] = []
    async for _, outcome in outcomes:
        if isinstance(outcome, ForecastResponse):
            forecasts.append(outcome)
        else:
            errors.append(outcome)
    return BatchResponse(as_of=day, forecasts=forecasts, errors=errors)


async def run_batch(
    f: Forecaster,
    tickers: list[str],
    day: dt.date,
    window: WindowConfig,
    adapter: str | None,
    client_key: str | None,
) -> AsyncIterator[Outcome]:
    async def one(ticker: str) -> Outcome:
        try:
            prepared = await f.prepare(ticker, day, window, route_label="batch")
            route = f.choose(adapter, client_key)
            async for event in f.events(prepared, route, route_label="batch"):
                if isinstance(event, ForecastResponse):
                    return ticker, event
            raise RuntimeError("pipeline ended without a result")
        except Exception as exc:
            err = service_error_of(exc)
            return ticker, BatchItemError(ticker=ticker, type=err.type, message=err.message, code=err.code)

    tasks = [asyncio.create_task(one(t)) for t in tickers]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield await next_done
    finally:  # the client went away: stop what is still running
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def sse(outcomes: AsyncIterator[Outcome], day: dt.date) -> AsyncIterator[dict[str, str]]:
    done = failed = 0
    async for _, outcome in outcomes:
        if isinstance(outcome, ForecastResponse):
            done += 1
            yield {"event": "result", "data": outcome.model_dump_json()}
        else:
            failed += 1
            yield {"event": "error", "data": outcome.model_dump_json()}
    yield {
        "event": "done",
        "data": json.dumps({"as_of": day.isoformat(), "forecasts": done, "errors": failed}),
    }
