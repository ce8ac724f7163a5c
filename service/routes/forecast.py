"""``POST /v1/forecast``: one ticker, as JSON or as server-sent events."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from service.deps import ClientKey, State
from service.errors import error_body, service_error_of
from service.routes.responses import BODY, errors
from service.schemas import ForecastRequest, ForecastResponse

router = APIRouter(prefix="/v1", tags=["forecast"])

ERRORS = errors(*BODY, 404, 503)
ARM_HEADER = "X-Forecast-Arm"


@router.post(
    "/forecast",
    response_model=ForecastResponse,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
)
async def forecast(body: ForecastRequest, state: State, client_key: ClientKey = None) -> Any:
    """Next week's forecast for one ticker. With ``stream: true``: ``token`` events with the
    answer's text as it is generated, then one ``result`` event with the full forecast (or
    an ``error`` event in the one error shape)."""
    if body.stream:
        stream = await state.forecaster.stream(body, client_key)  # admitted before the 200
        return EventSourceResponse(sse(stream.events), headers={ARM_HEADER: stream.arm})
    result = await state.forecaster.forecast(body, client_key)
    return JSONResponse(result.model_dump(mode="json"), headers={ARM_HEADER: result.arm})


async def sse(events: AsyncGenerator[str | ForecastResponse, None]) -> AsyncIterator[dict[str, str]]:
    """Pipeline events as SSE dicts; a failure mid-stream becomes an ``error`` event. When the
    client goes away the pipeline is closed at once, releasing its adapter lease."""
    index = 0
    try:
        async for event in events:
            if isinstance(event, ForecastResponse):
                yield {"event": "result", "data": event.model_dump_json()}
            else:
                yield {"event": "token", "data": json.dumps({"text": event, "index": index})}
                index += 1
    except Exception as exc:
        err = service_error_of(exc)
        yield {"event": "error", "data": json.dumps(error_body(err.type, err.message, err.code))}
    finally:
        await events.aclose()
