"""Weekly windows, labels and the prompt builder.

Weeks run Sunday to Sunday, as in FinGPT-Forecaster: the price at a week boundary is the last
adjusted close on or before that Sunday. A forecast made on any day D uses the latest Sunday
on or before D as its ``as_of``: the prompt holds only data dated on or before ``as_of``
(prices, news by publication day, basic financials by publication, company facts at
``as_of``), and the label is the return over the next week, ``as_of`` → ``as_of + 7``.

Point in time: a report enters once public (:func:`published_on`); the market cap is the
profile's share count × the adjusted close on or before ``as_of``, never the provider's
"today" figure (:func:`point_in_time_profile`).
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
import time
from dataclasses import dataclass, field

import pandas as pd

from forecast.bins import Bin, bin_of_return
from forecast.errors import NoDataError
from forecast.prompt import FinancialsBlock, ForecastPrompt, Instruction, NewsLine, WeekBlock
from forecast.providers.base import MarketData
from forecast.types import BasicFinancials, CompanyProfile, NewsItem

WEEK = dt.timedelta(days=7)
SPAM_PREFIXES = ("Looking for stock market analysis and research with proves results?",)
NEAR_DUPLICATE_JACCARD = 0.8  # headline token sets this similar (digits masked) are one story


@dataclass(frozen=True)
class WindowConfig:
    weeks: int = 4  # weeks of history in the prompt
    news_per_week: int = 5
    with_financials: bool = True
    with_indicators: bool = False
    # A report without a filing date counts as public this many days after its period end
    # (US filers have 40-45 days for a 10-Q and 60-90 for a 10-K).
    quarterly_report_lag_days: int = 45
    annual_report_lag_days: int = 90


DEFAULT_WINDOW = WindowConfig()


@dataclass(frozen=True)
class BuiltPrompt:
    """A prompt with its label (when the target week has closed) and data provenance."""

    prompt: ForecastPrompt
    label: Bin | None
    realized_return: float | None
    stale_sources: tuple[str, ...] = ()
    build_seconds: float = 0.0
    sources: dict[str, str] = field(default_factory=dict)


def week_start(day: dt.date) -> dt.date:
    """The latest Sunday on or before ``day``."""
    return day - dt.timedelta(days=(day.weekday() + 1) % 7)


def close_on_or_before(closes: pd.Series, day: dt.date) -> float | None:
    """The last close on or before ``day`` (``closes`` indexed by ascending dates)."""
    pos = int(closes.index.searchsorted(pd.Timestamp(day), side="right"))
    return None if pos == 0 else float(closes.iloc[pos - 1])


def week_return(closes: pd.Series, as_of: dt.date) -> float | None:
    """The return over the week ``as_of -> as_of + 7`` from its boundary closes, if priced."""
    p0, p1 = close_on_or_before(closes, as_of), close_on_or_before(closes, as_of + WEEK)
    return None if p0 is None or p1 is None else p1 / p0 - 1.0


def closed_week_return(closes: pd.Series, as_of: dt.date) -> float | None:
    """:func:`week_return` once the week has closed in ``closes``: its Friday (or a later day)
    is priced. The one rule for a label, in training data and in the service's scorer."""
    if not len(closes) or closes.index[-1].date() < as_of + WEEK - dt.timedelta(days=2):
        return None
    return week_return(closes, as_of)


_WORD = re.compile(r"[^\W_]+")


def headline_tokens(headline: str) -> frozenset[str]:
    """A headline's words, lower-cased, punctuation dropped, every number masked as ``#``."""
    return frozenset("#" if w[0].isdigit() else w for w in _WORD.findall(headline.lower()))


def near_duplicate(a: frozenset[str], b: frozenset[str]) -> bool:
    """Jaccard similarity of two headlines' tokens at least :data:`NEAR_DUPLICATE_JACCARD`."""
    union = len(a | b)
    return union == 0 or len(a & b) >= NEAR_DUPLICATE_JACCARD * union


def select_news(items: list[NewsItem], ticker: str, name: str, k: int) -> tuple[NewsLine, ...]:
    """At most ``k`` items, deterministically: spam, repeated and near-duplicate headlines
    dropped, items that name the company first, then the most recent; shown oldest first.

    Walks newest to oldest and stops at ``k`` items naming the company, so a busy week of a
    mega-cap (hundreds of items) costs a handful of regex searches, not hundreds. Of two
    near-duplicates the newer stays, unless only the older names the company.
    """
    word = name.split()[0] if name else ticker
    mentions = re.compile(rf"\b(?:{re.escape(ticker)}|{re.escape(word)})\b", re.IGNORECASE)
    seen: set[str] = set()
    tokens: dict[int, frozenset[str]] = {}
    relevant: list[int] = []
    other: list[int] = []
    for i in sorted(range(len(items)), key=lambda j: (items[j].published, j), reverse=True):
        n = items[i]
        key = n.headline.strip().lower()
        if not key or key in seen or n.summary.startswith(SPAM_PREFIXES):
            continue
        seen.add(key)
        names_company = bool(mentions.search(n.headline) or mentions.search(n.summary))
        if not names_company and len(other) == k:
            continue
        tokens[i] = headline_tokens(n.headline)
        twin = next((j for j in relevant + other if near_duplicate(tokens[i], tokens[j])), None)
        if twin is not None:
            if not names_company or twin in relevant:
                continue
            other.remove(twin)  # the older twin names the company: it replaces the newer one
        if names_company:
            relevant.append(i)
            if len(relevant) == k:
                break
        else:
            other.append(i)
    chosen = sorted((relevant + other)[:k], key=lambda j: (items[j].published, j))
    return tuple(NewsLine(headline=items[i].headline, summary=items[i].summary) for i in chosen)


def published_on(report: BasicFinancials, config: WindowConfig = DEFAULT_WINDOW) -> dt.date:
    """The day a report became public: its filing date, else its period end plus the lag."""
    if report.filed is not None:
        return report.filed
    days = config.annual_report_lag_days if report.frequency == "annual" else config.quarterly_report_lag_days
    return report.period + dt.timedelta(days=days)


def latest_financials(
    reports: list[BasicFinancials], as_of: dt.date, config: WindowConfig = DEFAULT_WINDOW
) -> FinancialsBlock | None:
    """The latest-period report public on or before ``as_of`` (a quarter over a year of the
    same period end), or None."""
    known = [r for r in reports if published_on(r, config) <= as_of]
    if not known:
        return None
    last = max(known, key=lambda r: (r.period, r.frequency == "quarterly"))
    return FinancialsBlock(period=last.period, metrics=dict(last.metrics))


def point_in_time_profile(profile: CompanyProfile, close: float) -> CompanyProfile:
    """The profile at the day of ``close`` (the adjusted close on or before ``as_of``): market
    cap = share count × that close, or unknown with the share count.

    The share count is the provider's current one (the snapshot's is from spring 2024): a
    count moves a few percent a year through buybacks and issues and, times a past close,
    says nothing about later prices, unlike the provider's cap. The other profile fields
    (name, industry, IPO date, country, currency, exchange) are taken as constant.
    """
    shares = profile.shares_outstanding
    return profile.model_copy(update={"market_cap": None if shares is None else shares * close})


def build_prompt(
    market: MarketData,
    ticker: str,
    day: dt.date,
    config: WindowConfig = DEFAULT_WINDOW,
    *,
    instruction: Instruction = Instruction.PREDICT,
) -> BuiltPrompt:
    """Build the forecast prompt for ``ticker`` as of the latest Sunday on or before ``day``."""
    t0 = time.perf_counter()
    as_of = week_start(day)
    first = as_of - config.weeks * WEEK
    stale: list[str] = []
    sources: dict[str, str] = {}

    def note(kind: str, fetched_stale: bool, source: str) -> None:
        sources[kind] = source
        if fetched_stale:
            stale.append(kind)

    profile = market.profiles.profile(ticker)
    note("profile", profile.stale, profile.source)
    # Ten days of slack before the first boundary covers holidays; one week after as_of for
    # the label only (it never enters the prompt). Indicators need ~6 months of closes.
    lookback = dt.timedelta(days=200 if config.with_indicators else 10)
    bars = market.prices.daily_bars(ticker, first - lookback, as_of + WEEK + dt.timedelta(days=1))
    note("prices", bars.stale, bars.source)
    closes = bars.value["Adj Close"]
    news = market.news.company_news(ticker, first + dt.timedelta(days=1), as_of)
    note("news", news.stale, news.source)

    news_days = [n.published.date() for n in news.value]  # providers return oldest first
    weeks: list[WeekBlock] = []
    for i in range(config.weeks):
        start, end = first + i * WEEK, first + (i + 1) * WEEK
        p0, p1 = close_on_or_before(closes, start), close_on_or_before(closes, end)
        if p0 is None or p1 is None:
            raise NoDataError(f"no {ticker} prices on or before {start if p0 is None else end}")
        in_week = news.value[bisect.bisect_right(news_days, start) : bisect.bisect_right(news_days, end)]
        weeks.append(WeekBlock(
            start=start, end=end, start_price=p0, end_price=p1, increased=p1 > p0,
            news=select_news(in_week, ticker, profile.value.name, config.news_per_week),
        ))

    financials = None
    if config.with_financials:
        reports = market.financials.basic_financials(ticker)
        note("financials", reports.stale, reports.source)
        financials = latest_financials(reports.value, as_of, config)

    indicators = None
    if config.with_indicators:
        from forecast.indicators import render_indicators

        indicators = render_indicators(closes.loc[: pd.Timestamp(as_of)])

    realized = closed_week_return(closes, as_of)
    label = None if realized is None else bin_of_return(realized)

    prompt = ForecastPrompt(
        ticker=ticker, profile=point_in_time_profile(profile.value, weeks[-1].end_price), weeks=tuple(weeks), financials=financials,
        indicators=indicators, as_of=as_of, target_end=as_of + WEEK, instruction=instruction,
        assumed_bin=label if instruction is Instruction.EXPLAIN else None,
    )
    return BuiltPrompt(
        prompt=prompt, label=label, realized_return=realized, stale_sources=tuple(stale),
        build_seconds=time.perf_counter() - t0, sources=sources,
    )


def weekly_labels(market: MarketData, ticker: str, start: dt.date, end: dt.date) -> list[tuple[dt.date, Bin]]:
    """``(as_of, bin)`` for every closed Sunday-to-Sunday week with ``start <= as_of`` and
    ``as_of + 7 <= end``: the label series (for baselines), no prompts built."""
    closes = market.prices.daily_bars(ticker, start - dt.timedelta(days=10), end + dt.timedelta(days=1)).value["Adj Close"]
    out: list[tuple[dt.date, Bin]] = []
    as_of = week_start(start) + (WEEK if week_start(start) < start else dt.timedelta(0))
    while as_of + WEEK <= end:
        ret = week_return(closes, as_of)
        if ret is not None:
            out.append((as_of, bin_of_return(ret)))
        as_of += WEEK
    return out
