"""Market-data provider down or rate-limited (429): forecasts are built from the cache,
flagged ``stale: true`` and counted in metrics; with nothing cached the answer is a clear 503
with Retry-After, and nothing is logged as a forecast. The cache is the shipped
``CachedMarketData`` over a "live" source (the snapshot) that fails on demand."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from reliability_harness import logged_forecasts

from forecast.errors import ProviderAuthError, ProviderError, RateLimitedError
from forecast.providers.cache import CachedMarketData
from forecast.providers.snapshot import SnapshotMarketData
from forecast.types import BasicFinancials, CompanyProfile, Fetched, NewsItem
from service.testing import error_of


class FlakyLive:
    """The snapshot as a live source; ``fail`` makes every call raise it."""

    def __init__(self) -> None:
        self.snapshot = SnapshotMarketData()
        self.fail: Exception | None = None
        self.calls = 0
        self.prices = self.news = self.profiles = self.financials = self

    def _answer(self, method: str, *args: Any) -> Any:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return getattr(self.snapshot, method)(*args)

    def daily_bars(self, ticker: str, start: dt.date, end: dt.date) -> Fetched[pd.DataFrame]:
        return self._answer("daily_bars", ticker, start, end)  # type: ignore[no-any-return]

    def company_news(self, ticker: str, start: dt.date, end: dt.date) -> Fetched[list[NewsItem]]:
        return self._answer("company_news", ticker, start, end)  # type: ignore[no-any-return]

    def profile(self, ticker: str) -> Fetched[CompanyProfile]:
        return self._answer("profile", ticker)  # type: ignore[no-any-return]

    def basic_financials(self, ticker: str) -> Fetched[list[BasicFinancials]]:
        return self._answer("basic_financials", ticker)  # type: ignore[no-any-return]


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2024, 1, 5, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


FAULTS = [
    (RateLimitedError("Finnhub company news for KO: HTTP 429 (after 4 attempts)"), "provider_rate_limited"),
    (ProviderError("Finnhub profile for KO: ConnectionError: connection refused"), "provider_error"),
    (ProviderAuthError("Finnhub refused the request (HTTP 401)"), "provider_auth"),
]


@pytest.mark.parametrize(("fault", "code"), FAULTS, ids=["429", "down", "auth"])
async def test_provider_fault_serves_stale_cache_or_a_clear_503(
    serve: Any, tmp_path: Path, fault: Exception, code: str
) -> None:
    live, clock = FlakyLive(), Clock()
    market = CachedMarketData(live, tmp_path / "cache.sqlite3", dt.timedelta(hours=1), clock=clock)
    async with serve(data=market) as client:
        fresh = await client.post("/v1/forecast", json={"ticker": "KO"})
        clock.now += dt.timedelta(hours=2)  # every cached entry has expired
        live.fail = fault  # the provider goes down
        stale = await client.post("/v1/forecast", json={"ticker": "KO"})
        rows_before = logged_forecasts(client)
        uncached = await client.post("/v1/forecast", json={"ticker": "MSFT"})
        rows_after = logged_forecasts(client)
        metrics = (await client.get("/metrics")).text
        live.fail = None  # the provider is back
        recovered = await client.post("/v1/forecast", json={"ticker": "MSFT"})

    assert fresh.status_code == 200 and fresh.json()["freshness"]["stale"] is False
    assert stale.status_code == 200, stale.text
    freshness = stale.json()["freshness"]
    assert freshness["stale"] is True and freshness["stale_sources"]
    for source in freshness["stale_sources"]:
        assert f'forecast_stale_forecasts_total{{source="{source}"}} 1.0' in metrics
    assert f"forecast_provider_cache_stale_serves_total {float(market.stale_serves)}" in metrics
    assert market.stale_serves >= len(freshness["stale_sources"]) > 0

    assert uncached.status_code == 503, uncached.text
    assert error_of(uncached)["code"] == code and uncached.headers["Retry-After"]
    assert rows_after == rows_before  # nothing logged for the refused forecast
    assert recovered.status_code == 200 and recovered.json()["freshness"]["stale"] is False
