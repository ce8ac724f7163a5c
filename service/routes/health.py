"""Liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from service.deps import State
from service.errors import Unavailable
from service.routes.responses import errors

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (no engine is consulted)."""
    return {"status": "ok"}


@router.get("/readyz", responses=errors(503))
async def readyz(state: State) -> dict[str, object]:
    """Every engine is alive and has answered a generation recently."""
    bases = sorted(state.engines)
    outcomes = await asyncio.gather(
        *(state.readiness.check(b, state.engines[b]) for b in bases), return_exceptions=True
    )
    failures = {
        base: str(out) or type(out).__name__
        for base, out in zip(bases, outcomes, strict=True)
        if isinstance(out, BaseException)
    }
    if failures:
        detail = "; ".join(f"{b}: {m}" for b, m in sorted(failures.items()))
        raise Unavailable(f"not ready: {detail}", code="not_ready")
    return {"status": "ready", "engines": sorted(state.engines), "aliases": state.registry.aliases}


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    return Response(state.telemetry.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")
