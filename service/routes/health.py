"""Liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.deps import State
from service.errors import Unavailable

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (no engine is consulted)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: State) -> dict[str, object]:
    """Every engine is alive and has answered a generation recently."""
    failures = {}
    for base, engine in state.engines.items():
        try:
            await state.readiness.check(base, engine)
        except Exception as exc:
            failures[base] = str(exc) or type(exc).__name__
    if failures:
        detail = "; ".join(f"{b}: {m}" for b, m in sorted(failures.items()))
        raise Unavailable(f"not ready: {detail}", code="not_ready")
    return {"status": "ready", "engines": sorted(state.engines), "aliases": state.registry.aliases}


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    return Response(state.telemetry.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")
