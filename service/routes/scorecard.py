"""Realized accuracy per adapter: ``GET /v1/adapters/{name}/scorecard`` (public, read-only)
and ``POST /v1/scorecard/score`` (admin) to score closed weeks now."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Path

from service.deps import Admin, State
from service.errors import NotFound
from service.forecast_log import Scorecard
from service.manifest import SEGMENT
from service.routes.responses import ADMIN, errors
from service.schemas import ScorecardOut, ScorecardResponse

router = APIRouter(tags=["scorecard"])


def card_out(c: Scorecard) -> ScorecardOut:
    return ScorecardOut(
        adapter=c.adapter, version=c.version, forecasts=c.forecasts, parsed=c.parsed,
        probed=c.probed, scored=c.scored, parse_failure_rate=c.parse_failure_rate,
        binary_accuracy=c.binary_accuracy, mse=c.mse, mean_latency_s=c.mean_latency_s,
        mean_ttft_s=c.mean_ttft_s, tokens_per_s=c.tokens_per_s,
    )


@router.get(
    "/v1/adapters/{name}/scorecard", response_model=ScorecardResponse, responses=errors(404, 422)
)
async def scorecard(
    state: State, name: str = Path(pattern=SEGMENT.pattern)
) -> ScorecardResponse:
    """Forecasts, parse rate, realized binary accuracy and MSE (bin midpoints, %²) and
    speed, per version and over all versions of the adapter."""
    cards = await anyio.to_thread.run_sync(state.forecast_log.scorecards, name)
    known = name in state.registry.available() or any(a.name == name for a in state.registry.loaded())
    if not cards and not known:
        raise NotFound(f"no adapter {name!r}", code="adapter_not_found")
    overall = next((card_out(c) for c in cards if c.version is None), None)
    return ScorecardResponse(
        adapter=name, overall=overall, versions=[card_out(c) for c in cards if c.version is not None]
    )


@router.post("/v1/scorecard/score", dependencies=Admin, responses=errors(*ADMIN))
async def score_now(state: State) -> dict[str, int]:
    """Fill realized returns of every forecast whose target week has closed."""
    updated = await anyio.to_thread.run_sync(state.scorer.score_pending)
    return {"updated": updated}
