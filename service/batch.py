"""Many tickers at once: one day and one prompt window for all, every forecast submitted to
the engines at once, outcomes in the order they finish (a failed ticker is an outcome too)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from forecast.universe import members
from service.errors import InvalidRequest, service_error_of
from service.schemas import BatchItemError, BatchRequest, ForecastResponse
from service.state import ServiceState

Outcome = tuple[str, ForecastResponse | BatchItemError]


@dataclass(frozen=True)
class Batch:
    as_of: dt.date
    outcomes: AsyncIterator[Outcome]  # in the order they finish; started on first iteration


async def start_batch(state: ServiceState, request: BatchRequest, client_key: str | None) -> Batch:
    """The batch of ``request`` (tickers default to the Dow 30 of that date): a bad date,
    window, size or adapter is refused here, before any forecast starts."""
    f = state.forecaster
    day = f.resolve_day(request.as_of)
    window = await f.window(request)  # one window for every ticker, checked before any fetch
    tickers = list(dict.fromkeys(t.strip().upper() for t in (request.tickers or members(day))))
    if len(tickers) > state.settings.max_batch:
        raise InvalidRequest(f"at most {state.settings.max_batch} tickers", code="batch_too_large")
    if request.adapter:
        state.registry.resolve(request.adapter)

    async def one(ticker: str) -> Outcome:
        try:
            return ticker, await f.forecast_ticker(
                ticker, day, window, request.adapter, client_key, "batch"
            )
        except Exception as exc:
            err = service_error_of(exc)
            return ticker, BatchItemError(ticker=ticker, type=err.type, message=err.message, code=err.code)

    return Batch(day, as_finished(one, tickers))


async def as_finished(
    job: Callable[[str], Awaitable[Outcome]], tickers: list[str]
) -> AsyncIterator[Outcome]:
    """``job`` for every ticker at once, outcomes in the order they finish; closing the
    iterator (the client went away) cancels what is still running."""
    tasks = [asyncio.ensure_future(job(ticker)) for ticker in tickers]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield await next_done
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
