"""The embedded snapshot (``forecast/snapshot/``) as a :class:`~forecast.providers.base.MarketData`.

Files are parsed lazily, once per ticker and kind, and memoized: a warm prompt build only
slices in-memory data. News is kept sorted by publication time next to a parallel list of
UTC days, so a date-range query is two bisections and a slice.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from forecast.errors import NoDataError, UnknownTickerError
from forecast.providers.base import (
    PRICE_COLUMNS,
    FinancialsProvider,
    NewsProvider,
    PriceProvider,
    ProfileProvider,
)
from forecast.types import BasicFinancials, CompanyProfile, Fetched, NewsItem

SOURCE = "snapshot"
SNAPSHOT_FIRST = dt.date(2023, 9, 24)  # the first Sunday (as_of) whose prompts carry news
SNAPSHOT_LATEST = dt.date(2023, 12, 31)  # the last one: the snapshot's "this week"
NEWS_TIME_FORMAT = "%Y%m%d%H%M%S"

V = TypeVar("V")


def default_snapshot_dir() -> Path:
    """The snapshot shipped as package data next to this package."""
    return Path(__file__).resolve().parent.parent / "snapshot"


@dataclass(frozen=True)
class _NewsIndex:
    days: list[dt.date]  # UTC publication day of items[i], ascending
    items: list[NewsItem]


def parse_news_line(raw: dict[str, Any]) -> NewsItem:
    """One snapshot news row (``datetime`` is ``YYYYMMDDhhmmss`` in UTC) as a NewsItem."""
    published = dt.datetime.strptime(str(raw["datetime"]), NEWS_TIME_FORMAT).replace(tzinfo=dt.UTC)
    return NewsItem(
        published=published,
        headline=str(raw.get("headline") or ""),
        summary=str(raw.get("summary") or ""),
    )


def _positive(value: Any) -> float | None:
    """A positive number, else None (Finnhub sends 0 or leaves a field out when unknown)."""
    return float(value) if value and float(value) > 0 else None


def profile_from_finnhub(raw: dict[str, Any]) -> CompanyProfile:
    """Map Finnhub ``profile2`` fields onto :class:`CompanyProfile`."""
    return CompanyProfile(
        ticker=str(raw["ticker"]),
        name=str(raw["name"]),
        industry=str(raw.get("finnhubIndustry") or ""),
        ipo=str(raw.get("ipo") or ""),
        market_cap=_positive(raw.get("marketCapitalization")),
        shares_outstanding=_positive(raw.get("shareOutstanding")),
        currency=str(raw.get("currency") or ""),
        country=str(raw.get("country") or ""),
        exchange=str(raw.get("exchange") or ""),
    )


class SnapshotMarketData:
    """Prices, news, profiles and basic financials read from a snapshot directory.

    Thread-safe: loads are guarded by a lock, and every answer is a fresh copy (a DataFrame
    copy, a new list), so callers cannot mutate the memoized data.
    """

    prices: PriceProvider
    news: NewsProvider
    profiles: ProfileProvider
    financials: FinancialsProvider

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_snapshot_dir()
        if not self.root.is_dir():
            raise FileNotFoundError(f"snapshot directory not found: {self.root}")
        self.prices = self.news = self.profiles = self.financials = self
        self._lock = threading.Lock()
        self._bars: dict[str, pd.DataFrame] = {}
        self._news: dict[str, _NewsIndex] = {}
        self._basics: dict[str, list[BasicFinancials]] = {}
        self._profiles: dict[str, CompanyProfile] | None = None
        self._tickers = self._known_tickers()

    # -- MarketData -------------------------------------------------------------------------

    def daily_bars(self, ticker: str, start: dt.date, end: dt.date) -> Fetched[pd.DataFrame]:
        """Bars for ``start <= day < end``; ``NoDataError`` if the window holds none."""
        symbol = self._require_known(ticker)
        bars = self._load(self._bars, symbol, self._read_bars)
        lo = bars.index.searchsorted(pd.Timestamp(start), side="left")
        hi = bars.index.searchsorted(pd.Timestamp(end), side="left")
        if lo >= hi:
            raise NoDataError(f"snapshot has no {symbol} bars for {start} <= day < {end}")
        return Fetched(bars.iloc[lo:hi].copy(), source=SOURCE)

    def company_news(self, ticker: str, start: dt.date, end: dt.date) -> Fetched[list[NewsItem]]:
        """News on UTC days ``start..end`` inclusive, oldest first.

        A window inside the snapshot's news coverage for the ticker may be empty (a quiet
        week); a window wholly outside it raises ``NoDataError``.
        """
        symbol = self._require_known(ticker)
        index = self._load(self._news, symbol, self._read_news)
        if not index.days or end < index.days[0] or start > index.days[-1]:
            raise NoDataError(f"snapshot has no {symbol} news for {start} .. {end}")
        lo = bisect.bisect_left(index.days, start)
        hi = bisect.bisect_right(index.days, end)
        return Fetched(index.items[lo:hi], source=SOURCE)

    def profile(self, ticker: str) -> Fetched[CompanyProfile]:
        symbol = self._require_known(ticker)
        with self._lock:
            if self._profiles is None:
                self._profiles = self._read_profiles()
            found = self._profiles.get(symbol)
        if found is None:
            raise NoDataError(f"snapshot has no profile for {symbol}")
        return Fetched(found, source=SOURCE)

    def basic_financials(self, ticker: str) -> Fetched[list[BasicFinancials]]:
        """Quarterly reports, oldest period first, one per period."""
        symbol = self._require_known(ticker)
        reports = self._load(self._basics, symbol, self._read_basics)
        if not reports:
            raise NoDataError(f"snapshot has no {symbol} basic financials")
        return Fetched(list(reports), source=SOURCE)

    # -- loading ------------------------------------------------------------------------------

    @property
    def tickers(self) -> tuple[str, ...]:
        """Every ticker with at least one file in the snapshot, sorted."""
        return self._tickers

    def _known_tickers(self) -> tuple[str, ...]:
        found = {p.stem for p in (self.root / "prices").glob("*.csv")}
        for kind in ("news", "basics"):
            found |= {p.stem for p in (self.root / kind).glob("*.jsonl")}
        profiles = self.root / "profiles.json"
        if profiles.is_file():
            found |= set(json.loads(profiles.read_text(encoding="utf-8")))
        return tuple(sorted(found))

    def _require_known(self, ticker: str) -> str:
        symbol = ticker.strip().upper()
        if symbol not in self._tickers:
            raise UnknownTickerError(f"{ticker!r} is not in the data snapshot")
        return symbol

    def _load(self, memo: dict[str, V], symbol: str, read: Callable[[str], V]) -> V:
        with self._lock:
            if symbol not in memo:
                memo[symbol] = read(symbol)
            return memo[symbol]

    def _read_bars(self, symbol: str) -> pd.DataFrame:
        path = self.root / "prices" / f"{symbol}.csv"
        if not path.is_file():
            return pd.DataFrame(columns=list(PRICE_COLUMNS), index=pd.DatetimeIndex([]))
        frame = pd.read_csv(path, index_col="Date", parse_dates=["Date"])
        frame.index = pd.DatetimeIndex(frame.index, name="Date").as_unit("ns")
        return frame.loc[:, list(PRICE_COLUMNS)].sort_index()

    def _read_news(self, symbol: str) -> _NewsIndex:
        path = self.root / "news" / f"{symbol}.jsonl"
        if not path.is_file():
            return _NewsIndex(days=[], items=[])
        with path.open(encoding="utf-8") as lines:
            items = [parse_news_line(json.loads(line)) for line in lines if line.strip()]
        items.sort(key=lambda item: item.published)
        return _NewsIndex(days=[item.published.date() for item in items], items=items)

    def _read_basics(self, symbol: str) -> list[BasicFinancials]:
        path = self.root / "basics" / f"{symbol}.jsonl"
        if not path.is_file():
            return []
        by_period: dict[str, BasicFinancials] = {}
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                row = json.loads(line)
                period = str(row.pop("period"))
                # The source repeats each quarter once per weekly prompt; keep the last copy.
                by_period[period] = BasicFinancials(
                    period=dt.date.fromisoformat(period), metrics=row
                )
        return [by_period[p] for p in sorted(by_period)]

    def _read_profiles(self) -> dict[str, CompanyProfile]:
        path = self.root / "profiles.json"
        if not path.is_file():
            return {}
        raw: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        return {symbol.upper(): profile_from_finnhub(fields) for symbol, fields in raw.items()}
