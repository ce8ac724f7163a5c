"""CachedMarketData: TTL with a fake clock, stale serving, counters, lossless storage, redaction."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from forecast.errors import (
    NoDataError,
    ProviderAuthError,
    ProviderError,
    RateLimitedError,
    UnknownTickerError,
)
from forecast.providers.base import FinancialsProvider, NewsProvider, PriceProvider, ProfileProvider
from forecast.providers.cache import CachedMarketData, dump_frame, load_frame, redact_secrets
from forecast.providers.snapshot import SnapshotMarketData
from forecast.types import BasicFinancials, CompanyProfile, Fetched, NewsItem

D = dt.date
T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)
TTL = dt.timedelta(hours=1)
API_KEY = "fh-secret-key-42"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access in a unit test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


class FlakyLive:
    """The snapshot as a 'live' source that counts calls and fails on demand."""

    prices: PriceProvider
    news: NewsProvider
    profiles: ProfileProvider
    financials: FinancialsProvider

    def __init__(self) -> None:
        self.snapshot = SnapshotMarketData()
        self.calls = 0
        self.fail: Exception | None = None
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


@pytest.fixture
def live() -> FlakyLive:
    return FlakyLive()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cached(tmp_path: Path, live: FlakyLive, clock: FakeClock) -> CachedMarketData:
    return CachedMarketData(live, tmp_path / "cache.sqlite3", TTL, clock=clock, redact=[API_KEY])


def bars(market: Any) -> Fetched[pd.DataFrame]:
    return market.prices.daily_bars("AAPL", D(2023, 10, 2), D(2023, 11, 1))  # type: ignore[no-any-return]


def test_miss_then_hit_until_ttl(
    cached: CachedMarketData, live: FlakyLive, clock: FakeClock
) -> None:
    first = bars(cached)
    clock.advance(TTL - dt.timedelta(seconds=1))
    second = bars(cached)
    assert live.calls == 1 and (cached.hits, cached.misses, cached.stale_serves) == (1, 1, 0)
    assert not second.stale and second.source == "snapshot" and second.fetched_at == T0
    pd.testing.assert_frame_equal(second.value, first.value, check_exact=True)

    clock.advance(dt.timedelta(seconds=1))  # now exactly TTL old: expired
    third = bars(cached)
    assert live.calls == 2 and (cached.hits, cached.misses) == (1, 2)
    assert not third.stale


def test_keys_separate_windows_and_normalize_tickers(
    cached: CachedMarketData, live: FlakyLive
) -> None:
    cached.daily_bars("AAPL", D(2023, 10, 2), D(2023, 11, 1))
    cached.daily_bars(" aapl", D(2023, 10, 2), D(2023, 11, 1))
    cached.daily_bars("AAPL", D(2023, 10, 2), D(2023, 11, 2))
    cached.company_news("AAPL", D(2023, 10, 2), D(2023, 11, 1))
    assert live.calls == 3 and cached.hits == 1


def test_stale_serve_on_provider_error(
    cached: CachedMarketData, live: FlakyLive, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    original = bars(cached)
    clock.advance(2 * TTL)
    live.fail = RateLimitedError("Finnhub company news for AAPL: HTTP 429 (after 4 attempts)")
    with caplog.at_level(logging.WARNING, logger="forecast.providers.cache"):
        stale = bars(cached)
    assert stale.stale and stale.fetched_at == T0 and stale.source == "snapshot"
    assert stale.error is not None and "RateLimitedError" in stale.error and "429" in stale.error
    pd.testing.assert_frame_equal(stale.value, original.value, check_exact=True)
    assert (cached.hits, cached.misses, cached.stale_serves) == (0, 2, 1)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "serving stale prices for AAPL" in caplog.text


def test_auth_errors_also_fall_back_to_stale(
    cached: CachedMarketData, live: FlakyLive, clock: FakeClock
) -> None:
    cached.profile("MSFT")
    clock.advance(2 * TTL)
    live.fail = ProviderAuthError("Finnhub refused the request (HTTP 401): Invalid API key")
    fetched = cached.profile("MSFT")
    assert fetched.stale and fetched.value.ticker == "MSFT" and cached.stale_serves == 1


def test_reraise_when_nothing_cached(cached: CachedMarketData, live: FlakyLive) -> None:
    live.fail = RateLimitedError("HTTP 429")
    with pytest.raises(RateLimitedError):
        bars(cached)
    assert (cached.hits, cached.misses, cached.stale_serves) == (0, 1, 0)


@pytest.mark.parametrize("error", [UnknownTickerError("no such ticker"), NoDataError("empty")])
def test_answers_pass_through_and_are_not_stale_served(
    cached: CachedMarketData, live: FlakyLive, clock: FakeClock, error: Exception
) -> None:
    bars(cached)
    clock.advance(2 * TTL)
    live.fail = error
    with pytest.raises(type(error)):
        bars(cached)
    assert cached.stale_serves == 0


def test_api_key_never_in_error_text_or_logs(
    cached: CachedMarketData, live: FlakyLive, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cached.basic_financials("AAPL")
    clock.advance(2 * TTL)
    live.fail = ProviderError(
        f"ConnectionError: https://finnhub.io/api/v1/stock/metric?symbol=AAPL&token={API_KEY} "
        f"(key {API_KEY})"
    )
    with caplog.at_level(logging.DEBUG):
        fetched = cached.basic_financials("AAPL")
    assert fetched.stale and fetched.error is not None
    assert API_KEY not in fetched.error and "token=***" in fetched.error
    assert API_KEY not in caplog.text and caplog.text


def test_values_round_trip_losslessly(cached: CachedMarketData, live: FlakyLive) -> None:
    news = cached.company_news("AAPL", D(2023, 12, 1), D(2023, 12, 8)).value
    profile = cached.profile("AAPL").value
    reports = cached.basic_financials("AAPL").value
    assert [cached.company_news("AAPL", D(2023, 12, 1), D(2023, 12, 8)).value] == [news]
    assert cached.profile("AAPL").value == profile
    again = cached.basic_financials("AAPL").value
    assert again == reports
    for before, after in zip(reports, again, strict=True):
        assert list(after.metrics) == list(before.metrics)  # key order kept
        assert [type(v) for v in after.metrics.values()] == [
            type(v) for v in before.metrics.values()
        ]
    hit = cached.company_news("AAPL", D(2023, 12, 1), D(2023, 12, 8)).value
    assert all(item.published.tzinfo == dt.UTC for item in hit)
    assert cached.hits == 4 and live.calls == 3


def test_frame_codec_is_exact() -> None:
    frame = pd.DataFrame(
        {"Open": [0.1 + 0.2, 1e-300, float("nan")], "Volume": [1, 2**62, 0]},
        index=pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"], name="Date"),
    )
    restored = load_frame(dump_frame(frame))
    pd.testing.assert_frame_equal(restored, frame, check_exact=True)
    assert restored.index.unit == frame.index.unit
    assert restored["Volume"].dtype == "int64"


def test_cache_persists_across_instances_in_wal_mode(
    tmp_path: Path, live: FlakyLive, clock: FakeClock
) -> None:
    path = tmp_path / "nested" / "cache.sqlite3"
    with CachedMarketData(live, path, TTL, clock=clock) as first:
        bars(first)
    with CachedMarketData(live, path, TTL, clock=clock) as second:
        bars(second)
        assert second.hits == 1
    assert live.calls == 1
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_redact_secrets() -> None:
    text = "GET /x?symbol=A&token=abc123&apikey=zzz failed; key abc123"
    assert (
        redact_secrets(text, ["abc123"]) == "GET /x?symbol=A&token=***&apikey=*** failed; key ***"
    )
