"""SnapshotMarketData over the shipped snapshot (and a tiny one written in tmp_path)."""

from __future__ import annotations

import datetime as dt
import json
import socket
from pathlib import Path

import pandas as pd
import pytest

from forecast.errors import NoDataError, UnknownTickerError
from forecast.providers.base import PRICE_COLUMNS, MarketData
from forecast.providers.snapshot import SnapshotMarketData, default_snapshot_dir
from forecast.universe import ALL_TICKERS, INDEX_2023

D = dt.date


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access in a unit test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def snap() -> SnapshotMarketData:
    return SnapshotMarketData()


def test_is_a_market_data(snap: SnapshotMarketData) -> None:
    market: MarketData = snap
    assert market.prices.daily_bars is not None
    assert default_snapshot_dir().joinpath("README.md").is_file()


def test_snapshot_covers_every_member_since_2023(snap: SnapshotMarketData) -> None:
    assert set(snap.tickers) == set(ALL_TICKERS)


def test_daily_bars_window_is_start_inclusive_end_exclusive(snap: SnapshotMarketData) -> None:
    fetched = snap.daily_bars("AAPL", D(2024, 3, 4), D(2024, 3, 8))
    bars = fetched.value
    assert fetched.source == "snapshot" and not fetched.stale and fetched.error is None
    assert tuple(bars.columns) == PRICE_COLUMNS
    assert isinstance(bars.index, pd.DatetimeIndex) and bars.index.tz is None
    assert [d.date() for d in bars.index] == [
        D(2024, 3, 4),
        D(2024, 3, 5),
        D(2024, 3, 6),
        D(2024, 3, 7),
    ]
    assert bars.loc["2024-03-07", "Close"] == pytest.approx(169.0)
    assert bars["Volume"].dtype.kind == "i"


def test_daily_bars_returns_copies(snap: SnapshotMarketData) -> None:
    first = snap.daily_bars("MSFT", D(2024, 1, 2), D(2024, 1, 10)).value
    first.loc[:, "Close"] = -1.0
    again = snap.daily_bars("MSFT", D(2024, 1, 2), D(2024, 1, 10)).value
    assert (again["Close"] > 0).all()


def test_daily_bars_empty_window_is_no_data(snap: SnapshotMarketData) -> None:
    with pytest.raises(NoDataError):
        snap.daily_bars("AAPL", D(2024, 3, 9), D(2024, 3, 11))  # a weekend
    with pytest.raises(NoDataError):
        snap.daily_bars("AAPL", D(2025, 1, 1), D(2025, 2, 1))  # after the snapshot


@pytest.mark.parametrize("method", ["daily_bars", "company_news"])
def test_unknown_ticker(snap: SnapshotMarketData, method: str) -> None:
    with pytest.raises(UnknownTickerError, match="TSLA"):
        getattr(snap, method)("TSLA", D(2023, 10, 1), D(2023, 10, 8))
    with pytest.raises(UnknownTickerError):
        snap.profile("TSLA")


def test_news_is_utc_oldest_first_and_day_inclusive(snap: SnapshotMarketData) -> None:
    fetched = snap.company_news("AAPL", D(2023, 10, 2), D(2023, 10, 8))
    items = fetched.value
    assert items, "AAPL has news every week of the snapshot"
    assert all(i.published.tzinfo == dt.UTC for i in items)
    assert [i.published for i in items] == sorted(i.published for i in items)
    assert {i.published.date() for i in items} <= {
        D(2023, 10, 2) + dt.timedelta(n) for n in range(7)
    }


def test_news_matches_the_raw_jsonl(snap: SnapshotMarketData) -> None:
    raw = [
        json.loads(line)
        for line in (default_snapshot_dir() / "news" / "AAPL.jsonl").read_text().splitlines()
    ]
    day = [r for r in raw if r["datetime"].startswith("20231005")]
    items = snap.company_news("AAPL", D(2023, 10, 5), D(2023, 10, 5)).value
    assert len(items) == len(day)
    first = min(day, key=lambda r: r["datetime"])
    assert items[0].published == dt.datetime.strptime(first["datetime"], "%Y%m%d%H%M%S").replace(
        tzinfo=dt.UTC
    )


def test_news_outside_coverage_is_no_data(snap: SnapshotMarketData) -> None:
    with pytest.raises(NoDataError):
        snap.company_news("AAPL", D(2024, 2, 1), D(2024, 2, 7))
    with pytest.raises(NoDataError, match="AMZN"):  # a member, but the snapshot has no news
        snap.company_news("AMZN", D(2023, 10, 2), D(2023, 10, 8))


def test_profile_maps_finnhub_fields(snap: SnapshotMarketData) -> None:
    profile = snap.profile("AXP").value
    assert profile.ticker == "AXP"
    assert profile.name == "American Express Co"
    assert profile.industry == "Financial Services"
    assert profile.market_cap == pytest.approx(168338.49)
    assert profile.shares_outstanding == pytest.approx(723.87)
    assert profile.ipo == "1977-05-18" and profile.currency == "USD"
    with pytest.raises(NoDataError):
        snap.profile("NVDA")


def test_every_2023_member_has_profile_news_and_basics(snap: SnapshotMarketData) -> None:
    for ticker in INDEX_2023:
        assert snap.profile(ticker).value.ticker == ticker
        assert snap.basic_financials(ticker).value
        assert snap.daily_bars(ticker, D(2023, 12, 1), D(2023, 12, 8)).value.shape[0] == 5


def test_basic_financials_one_per_period_in_file_key_order(snap: SnapshotMarketData) -> None:
    reports = snap.basic_financials("AAPL").value
    periods = [r.period for r in reports]
    assert (
        periods
        == sorted(set(periods))
        == [D(2023, 4, 1), D(2023, 7, 1), D(2023, 9, 30), D(2023, 12, 30)]
    )
    first_row = json.loads(
        (default_snapshot_dir() / "basics" / "AAPL.jsonl").read_text().splitlines()[0]
    )
    del first_row["period"]
    assert list(reports[0].metrics) == list(first_row)
    assert reports[0].metrics == first_row
    assert "period" not in reports[-1].metrics


def test_injectable_root(tmp_path: Path) -> None:
    (tmp_path / "prices").mkdir()
    (tmp_path / "news").mkdir()
    (tmp_path / "prices" / "ABC.csv").write_text(
        "Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,1,2,0.5,1.5,1.4,100\n"
    )
    (tmp_path / "news" / "ABC.jsonl").write_text(
        json.dumps({"datetime": "20240102235959", "headline": "h", "summary": "s"}) + "\n"
    )
    snap = SnapshotMarketData(tmp_path)
    assert snap.tickers == ("ABC",)
    assert snap.daily_bars("abc", D(2024, 1, 1), D(2024, 1, 3)).value["Adj Close"].iloc[0] == 1.4
    item = snap.company_news("ABC", D(2024, 1, 2), D(2024, 1, 2)).value[0]
    assert item.published == dt.datetime(2024, 1, 2, 23, 59, 59, tzinfo=dt.UTC)
    with pytest.raises(NoDataError):
        snap.basic_financials("ABC")


def test_missing_root_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SnapshotMarketData(tmp_path / "nope")
