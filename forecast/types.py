"""Plain data types shared by providers, windows, prompts and the layers above."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class NewsItem(BaseModel):
    """One company-news item as Finnhub's ``company-news`` returns it."""

    model_config = ConfigDict(frozen=True)

    published: dt.datetime  # UTC
    headline: str
    summary: str


class CompanyProfile(BaseModel):
    """The Finnhub ``profile2`` fields the prompt uses.

    A provider's profile is as of the day it was fetched (the snapshot's: spring 2024); the
    prompt builder replaces ``market_cap`` with its value at the prompt's ``as_of``
    (:func:`forecast.windows.point_in_time_profile`). ``None``: not known.
    """

    model_config = ConfigDict(frozen=True)

    ticker: str
    name: str
    industry: str  # finnhubIndustry
    ipo: str
    market_cap: float | None  # marketCapitalization, millions of `currency`
    shares_outstanding: float | None  # shareOutstanding, millions
    currency: str
    country: str
    exchange: str


class BasicFinancials(BaseModel):
    """One report of basic financials; ``metrics`` keeps the provider's key order.

    ``filed`` is the day the report was made public, where the provider gives it; otherwise
    the prompt builder assumes publication a fixed lag after ``period`` (the period end), by
    ``frequency`` (:func:`forecast.windows.published_on`).
    """

    model_config = ConfigDict(frozen=True)

    period: dt.date
    metrics: dict[str, float | int]
    filed: dt.date | None = None
    frequency: Literal["quarterly", "annual"] = "quarterly"


@dataclass(frozen=True)
class Fetched(Generic[T]):
    """A provider answer with its provenance.

    ``stale`` is true when the live source failed and the value came from the cache; callers
    surface it to the user and to metrics instead of hiding it.
    """

    value: T
    source: str
    stale: bool = False
    fetched_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    error: str | None = None
