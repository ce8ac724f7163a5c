"""Realized accuracy per adapter: ``GET /v1/adapters/{name}/scorecard`` (public, read-only)
and ``POST /v1/scorecard/score`` (admin) to score closed weeks now."""

from __future__ import annotations

from itertools import combinations, product

import anyio
from fastapi import APIRouter, Path, Query

from forecast.metrics import Interval, mean_interval, two_proportion_test, wilson_interval
from service.deps import Admin, State
from service.errors import NotFound
from service.forecast_log import Scorecard
from service.manifest import SEGMENT, version_key
from service.routes.responses import ADMIN, errors
from service.schemas import AccuracyComparison, ConfidenceInterval, ScorecardOut, ScorecardResponse
from service.state import ServiceState

router = APIRouter(tags=["scorecard"])


def card_out(c: Scorecard) -> ScorecardOut:
    accuracy_ci = None
    if c.binary_accuracy is not None and c.scored > 0:
        accuracy_ci = _ci(wilson_interval(c.binary_accuracy, c.scored))
    return ScorecardOut(
        adapter=c.adapter, version=c.version, forecasts=c.forecasts, parsed=c.parsed,
        probed=c.probed, scored=c.scored, parse_failure_rate=c.parse_failure_rate,
        binary_accuracy=c.binary_accuracy, binary_accuracy_ci=accuracy_ci, mse=c.mse,
        mse_ci=_ci(mean_interval(c.mse, c.mse_second_moment, c.scored))
        if c.mse is not None and c.mse_second_moment is not None and c.scored > 1 else None,
        mean_latency_s=c.mean_latency_s, mean_ttft_s=c.mean_ttft_s, tokens_per_s=c.tokens_per_s,
    )  # fmt: skip


def compare(versions: list[Scorecard], others: list[Scorecard]) -> list[AccuracyComparison]:
    """Every pair of ``versions`` (the newer as ``a``), then each of ``versions`` against each
    of ``others``; rows with nothing scored are left out."""
    scored = [c for c in sorted(versions, key=_order) if c.scored and c.binary_accuracy is not None]
    rivals = [c for c in sorted(others, key=_order) if c.scored and c.binary_accuracy is not None]
    pairs = [(new, old) for old, new in combinations(scored, 2)] + list(product(scored, rivals))
    return [_test(a, b) for a, b in pairs]


def _test(a: Scorecard, b: Scorecard) -> AccuracyComparison:
    acc_a, acc_b = a.binary_accuracy or 0.0, b.binary_accuracy or 0.0
    # The log reports the hit rate; the hits are whole, so round away float noise.
    t = two_proportion_test(round(acc_a * a.scored), a.scored, round(acc_b * b.scored), b.scored)
    return AccuracyComparison(
        a=f"{a.adapter}@{a.version}", b=f"{b.adapter}@{b.version}", scored_a=a.scored,
        scored_b=b.scored, accuracy_a=acc_a, accuracy_b=acc_b, difference=t.difference, z=t.z,
        p_value=t.p_value,
    )  # fmt: skip


def _order(c: Scorecard) -> tuple[tuple[tuple[int, int | str], ...], str]:
    return version_key(c.version or ""), c.version or ""


def _ci(i: Interval) -> ConfidenceInterval:
    return ConfidenceInterval(low=i.low, high=i.high, level=i.level)


async def _cards(state: ServiceState, name: str) -> list[Scorecard]:
    cards = await anyio.to_thread.run_sync(state.forecast_log.scorecards, name)
    known = name in state.registry.available() or any(a.name == name for a in state.registry.loaded())
    if not cards and not known:
        raise NotFound(f"no adapter {name!r}", code="adapter_not_found")
    return cards


@router.get(
    "/v1/adapters/{name}/scorecard", response_model=ScorecardResponse, responses=errors(404, 422)
)
async def scorecard(
    state: State,
    name: str = Path(pattern=SEGMENT.pattern),
    vs: str | None = Query(
        default=None,
        pattern=SEGMENT.pattern,
        description="Another adapter (the other A/B arm's): compare accuracy with its versions.",
    ),
) -> ScorecardResponse:
    """Forecasts, parse rate, realized binary accuracy (with a Wilson 95% interval) and MSE
    (bin midpoints, %²) and speed, per version and over all versions of the adapter, and a
    two-proportion z-test of accuracy between versions (and ``vs`` another adapter's)."""
    cards = await _cards(state, name)
    others = await _cards(state, vs) if vs is not None and vs != name else []
    versions = [c for c in cards if c.version is not None]
    overall = next((card_out(c) for c in cards if c.version is None), None)
    return ScorecardResponse(
        adapter=name, overall=overall, versions=[card_out(c) for c in versions],
        compare=compare(versions, [c for c in others if c.version is not None]),
    )  # fmt: skip


@router.post("/v1/scorecard/score", dependencies=Admin, responses=errors(*ADMIN))
async def score_now(state: State) -> dict[str, int]:
    """Fill realized returns of every forecast whose target week has closed."""
    updated = await anyio.to_thread.run_sync(state.scorer.score_pending)
    return {"updated": updated}
