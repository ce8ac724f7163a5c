"""``POST /v1/forecast/batch``: many tickers at once, results in the order they finish."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from sse_starlette import EventSourceResponse

from service.batch import Outcome, start_batch
from service.deps import ClientKey, State
from service.routes.forecast import ERRORS
from service.schemas import BatchItemError, BatchRequest, BatchResponse, ForecastResponse

router = APIRouter(prefix="/v1", tags=["forecast"])


@router.post(
    "/forecast/batch",
    response_model=BatchResponse,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
)
async def batch(body: BatchRequest, state: State, client_key: ClientKey = None) -> Any:
    """Forecasts for ``tickers`` (default: the Dow 30 of that date), all submitted to the
    engines at once. JSON lists them in completion order; ``stream: true`` sends a ``result``
    or ``error`` event per ticker as each finishes, then ``done``."""
    batch = await start_batch(state, body, client_key)
    if body.stream:
        return EventSourceResponse(sse(batch.outcomes, batch.as_of))
    forecasts: list[ForecastResponse] = []
    errors: list[BatchItemError] = []
    async for _, outcome in batch.outcomes:
        if isinstance(outcome, ForecastResponse):
            forecasts.append(outcome)
        else:
            errors.append(outcome)
    return BatchResponse(as_of=batch.as_of, forecasts=forecasts, errors=errors)


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
