"""A provider storm stalls nothing but its own forecasts: while Finnhub hangs (or answers 500
through its retries and backoff) under 64 concurrent forecasts of uncached tickers, /readyz,
/metrics, an admin route and a forecast served from the cache all complete, and the storm's
forecasts end in 503 ``provider_timeout`` with Retry-After at their deadline. An expired
entry is served stale at once and refreshed in the background, once per key."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability_harness import logged_forecasts, wait_until

from forecast.providers.cache import CachedMarketData
from forecast.universe import members
from service.testing import StormyLive, error_of

STORM = 64
THREADS = 4
# The storm's forecasts are in flight until this deadline; the other routes answer in ms.
DEADLINE_S = 3.0


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2024, 1, 5, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def stormy(market: Any, tmp_path: Path) -> Iterator[tuple[StormyLive, CachedMarketData, Clock]]:
    live, clock = StormyLive(market), Clock()
    cached = CachedMarketData(live, tmp_path / "cache.sqlite3", dt.timedelta(hours=1), clock=clock)
    try:
        yield live, cached, clock
    finally:
        live.release()  # the provider threads still waiting end
        cached.close()


@pytest.mark.parametrize("mode", ["hang", "500"])
async def test_a_provider_storm_stalls_only_its_own_forecasts(
    serve: Any, stormy: Any, admin: dict[str, str], mode: str
) -> None:
    live, cached, _ = stormy
    uncached = itertools.cycle(t for t in members(dt.date(2023, 12, 31)) if t != "KO")
    async with serve(
        data=cached, provider_threads=THREADS, provider_deadline_s=DEADLINE_S
    ) as client:
        warm = await client.post("/v1/forecast", json={"ticker": "KO"})
        live.mode = mode  # Finnhub goes down
        storm = [
            asyncio.create_task(client.post("/v1/forecast", json={"ticker": next(uncached)}))
            for _ in range(STORM)
        ]
        await wait_until(lambda: live.blocked == THREADS)  # every provider thread is held

        ready = await client.get("/readyz")
        scrape = await client.get("/metrics")
        listing = await client.get("/v1/adapters", headers=admin)
        from_cache = await client.post("/v1/forecast", json={"ticker": "KO"})
        still_in_flight = sum(not task.done() for task in storm)

        refused = await asyncio.gather(*storm)
        metrics = (await client.get("/metrics")).text
        rows = logged_forecasts(client)
        live.mode = None  # Finnhub is back: the held threads end, the pool serves again
        live.release()
        recovered = await client.post("/v1/forecast", json={"ticker": "MSFT"})

    assert warm.status_code == 200
    assert still_in_flight == STORM  # the four answers came while the whole storm waited
    assert ready.status_code == 200, ready.text
    assert scrape.status_code == 200 and "forecast_requests_total" in scrape.text
    assert listing.status_code == 200 and listing.json()["aliases"]
    assert from_cache.status_code == 200, from_cache.text
    assert from_cache.json()["freshness"]["stale"] is False

    for r in refused:
        assert r.status_code == 503, r.text
        assert error_of(r)["code"] == "provider_timeout" and r.headers["Retry-After"]
    assert f"forecast_provider_timeouts_total {float(STORM)}" in metrics
    assert rows == 2  # the two KO forecasts; nothing for the refused ones
    assert recovered.status_code == 200, recovered.text


async def test_an_expired_entry_is_served_stale_at_once_and_refreshed_in_the_background(
    serve: Any, stormy: Any
) -> None:
    live, cached, clock = stormy
    async with serve(data=cached) as client:
        await client.post("/v1/forecast", json={"ticker": "KO"})
        clock.now += dt.timedelta(hours=2)  # every entry has expired
        live.mode = "hang"
        first = await client.post("/v1/forecast", json={"ticker": "KO"})  # while Finnhub hangs
        second = await client.post("/v1/forecast", json={"ticker": "KO"})
        await wait_until(lambda: live.blocked == 3)  # profile, news, financials refreshing
        calls_while_hung = live.calls
        live.release()  # Finnhub answers: the refreshes land in the cache
        await wait_until(lambda: live.blocked == 0 and not cached._refreshing)
        refreshed = await client.post("/v1/forecast", json={"ticker": "KO"})

    for r in (first, second):
        assert r.status_code == 200, r.text
        assert r.json()["freshness"]["stale"] is True
    assert sorted(first.json()["freshness"]["stale_sources"]) == ["financials", "news", "prices", "profile"]
    # The Finnhub three are still refreshing for the second (prices may already be back).
    assert {"financials", "news", "profile"} <= set(second.json()["freshness"]["stale_sources"])
    assert calls_while_hung == 3  # one refresh per key, however many stale answers
    assert refreshed.status_code == 200 and refreshed.json()["freshness"]["stale"] is False
