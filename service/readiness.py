"""Readiness: an engine is ready when it is alive and has answered a generation recently."""

from __future__ import annotations

import asyncio
import time

from service.engine import EngineClient, GenerationParams


class Readiness:
    """Probe each engine with a one-token generation at most every ``interval_s`` seconds."""

    def __init__(self, interval_s: float, timeout_s: float) -> None:
        self._interval = interval_s
        self._timeout = timeout_s
        self._last_ok: dict[str, float] = {}

    async def check(self, base: str, engine: EngineClient) -> None:
        await engine.health()
        if time.monotonic() - self._last_ok.get(base, -1e18) < self._interval:
            return
        await asyncio.wait_for(self._probe(engine), self._timeout)
        self._last_ok[base] = time.monotonic()

    def forget(self, base: str) -> None:
        """Probe ``base`` at its next check (its engine was replaced)."""
        self._last_ok.pop(base, None)

    @staticmethod
    async def _probe(engine: EngineClient) -> None:
        params = GenerationParams(max_tokens=1)
        async for _ in engine.generate("ready?", params, None, f"readyz-{time.monotonic_ns()}"):
            pass
