"""The provider Protocols. Every provider returns a :class:`~forecast.types.Fetched`."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import pandas as pd

from forecast.types import BasicFinancials, CompanyProfile, Fetched, NewsItem

PRICE_COLUMNS = ("Open", "High", "Low", "Close", "Adj Close", "Volume")


class PriceProvider(Protocol):
    def daily_bars(self, ticker: str, start: dt.date, end: dt.date) -> Fetched[pd.DataFrame]:
        """Daily bars for ``start <= day < end``.

        A DataFrame indexed by naive ``DatetimeIndex`` (trading days, ascending) with
        :data:`PRICE_COLUMNS`; ``Adj Close`` is split- and dividend-adjusted. Raises
        ``UnknownTickerError`` for an unknown symbol and ``NoDataError`` for an empty window.
        """
        ...


class NewsProvider(Protocol):
    def company_news(self, ticker: str, start: dt.date, end: dt.date) -> Fetched[list[NewsItem]]:
        """Company news published on days ``start <= day <= end`` (UTC), oldest first."""
        ...


class ProfileProvider(Protocol):
    def profile(self, ticker: str) -> Fetched[CompanyProfile]: ...


class FinancialsProvider(Protocol):
    def basic_financials(self, ticker: str) -> Fetched[list[BasicFinancials]]:
        """Quarterly basic-financials reports, oldest period first."""
        ...


class MarketData(Protocol):
    """Everything the prompt builder needs, as one object (a snapshot or the live stack)."""

    prices: PriceProvider
    news: NewsProvider
    profiles: ProfileProvider
    financials: FinancialsProvider
