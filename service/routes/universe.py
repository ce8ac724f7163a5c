"""``GET /v1/universe``: the Dow 30 members on a date (public, read-only), as the forecast
route checks them: the page fills its ticker list from it."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from forecast.universe import members
from service.deps import State
from service.routes.responses import errors
from service.schemas import UniverseOut

router = APIRouter(prefix="/v1", tags=["universe"])


@router.get("/universe", response_model=UniverseOut, responses=errors(422))
async def universe(
    state: State,
    as_of: Annotated[
        dt.date | None,
        Query(description="Any day up to today; default: the service's default day."),
    ] = None,
) -> UniverseOut:
    """The index on ``as_of`` (its changes take effect on their date). 422 for a future date
    or one before the recorded membership, as ``POST /v1/forecast`` answers."""
    day = state.forecaster.resolve_day(as_of)
    return UniverseOut(as_of=day, members=list(members(day)), today=state.now().date())
