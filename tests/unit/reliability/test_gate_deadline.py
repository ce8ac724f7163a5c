"""The provider deadline counts from the moment a forecast reaches the market gate: a forecast
that waits for a cache-read slot (all of them held) spends its budget waiting, and gets its
503 ``provider_timeout`` at the deadline, not after the slot frees."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from pathlib import Path
from typing import Any

import pytest

import service.market_gate as market_gate
from forecast.providers.cache import CachedMarketData
from forecast.windows import WindowConfig
from service.errors import Unavailable
from service.market_gate import MarketGate
from service.telemetry import Telemetry

DAY = dt.date(2023, 12, 29)


async def test_the_deadline_covers_the_wait_for_a_cache_read_slot(
    market: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = threading.Event()
    entered = threading.Event()
    real = market_gate.build_prompt

    def slow_for_ko(source: Any, symbol: str, day: dt.date, window: WindowConfig) -> Any:
        if symbol == "KO":  # the one read that holds the only slot
            entered.set()
            held.wait()
        return real(source, symbol, day, window)

    monkeypatch.setattr(market_gate, "build_prompt", slow_for_ko)
    cached = CachedMarketData(market, tmp_path / "cache.sqlite3", dt.timedelta(hours=1))
    telemetry = Telemetry()
    gate = MarketGate(cached, telemetry, threads=1, deadline_s=0.3, retry_after_s=7)
    window = WindowConfig()
    try:
        holder = asyncio.create_task(gate.build("KO", DAY, window))
        await asyncio.to_thread(entered.wait)
        with pytest.raises(Unavailable) as refused:
            # bounded so that a regression fails instead of hanging the suite
            await asyncio.wait_for(gate.build("MSFT", DAY, window), 30)
        assert not holder.done()  # refused while the slot was still held
        assert refused.value.code == "provider_timeout"
        assert refused.value.headers["Retry-After"] == "7"
        assert telemetry.provider_timeouts._value.get() == 1
    finally:
        held.set()
        await asyncio.gather(holder, return_exceptions=True)  # past its own deadline too
        gate.close()
        cached.close()
