"""Nothing dated after the prompt date enters the prompt; labels are next week's return."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import pandas as pd
import pytest

from forecast.bins import bin_of_return
from forecast.dataset import build_rows, split_by_date
from forecast.providers.snapshot import SnapshotMarketData
from forecast.templates import ChatFormat, render_chat
from forecast.types import BasicFinancials, CompanyProfile, Fetched, NewsItem
from forecast.windows import WindowConfig, build_prompt, week_start

MARKET = SnapshotMarketData()
QUARTER_LAG = dt.timedelta(days=45)  # a report with no filing date is public 45 days after its quarter
DAYS = [dt.date(2023, 10, 25), dt.date(2023, 11, 19), dt.date(2023, 12, 31)]
TICKERS = ["AAPL", "JPM", "KO", "WBA"]


@dataclass
class PoisonedFuture:
    """The snapshot, with every datum dated after ``cut`` replaced by a visible poison: prices,
    news, reports not yet public (a quarter ended less than 45 days before), and the profile's
    market cap "as of today"."""

    inner: SnapshotMarketData
    cut: dt.date

    @property
    def prices(self) -> PoisonedFuture:
        return self

    news = financials = profiles = prices

    def daily_bars(self, ticker: str, start: dt.date, end: dt.date) -> Fetched[pd.DataFrame]:
        got = self.inner.daily_bars(ticker, start, end)
        bars = got.value.copy()
        bars.loc[bars.index > pd.Timestamp(self.cut), ["Close", "Adj Close"]] *= 7.77
        return replace(got, value=bars)

    def company_news(self, ticker: str, start: dt.date, end: dt.date) -> Fetched[list[NewsItem]]:
        got = self.inner.company_news(ticker, start, end + dt.timedelta(days=30))
        items = [
            n if n.published.date() <= self.cut else NewsItem(published=n.published, headline="POISON " + ticker, summary="POISON")
            for n in got.value
        ]
        return replace(got, value=items)

    def profile(self, ticker: str) -> Fetched[CompanyProfile]:
        got = self.inner.profile(ticker)
        today = got.value.model_copy(update={"market_cap": 777_777_777.0})
        return replace(got, value=today)

    def basic_financials(self, ticker: str) -> Fetched[list[BasicFinancials]]:
        got = self.inner.basic_financials(ticker)
        poisoned = [
            r if r.period + QUARTER_LAG <= self.cut else BasicFinancials(period=r.period, metrics={"POISON": 1})
            for r in got.value
        ]
        # Filed after the cut, though its period ended 60 days before it: public only once filed.
        late = BasicFinancials(period=self.cut - dt.timedelta(days=60), filed=self.cut + dt.timedelta(days=1), metrics={"POISON": 2})
        return replace(got, value=[*poisoned, late])


@pytest.mark.parametrize("day", DAYS)
@pytest.mark.parametrize("ticker", TICKERS)
def test_prompt_is_blind_to_everything_after_as_of(ticker, day):
    clean = build_prompt(MARKET, ticker, day, WindowConfig(with_indicators=True))
    as_of = clean.prompt.as_of
    poisoned = build_prompt(PoisonedFuture(MARKET, as_of), ticker, day, WindowConfig(with_indicators=True))
    text = render_chat(poisoned.prompt, ChatFormat.LLAMA3)
    assert "POISON" not in text
    assert poisoned.prompt == clean.prompt
    assert all(w.end <= as_of for w in clean.prompt.weeks)
    assert clean.prompt.financials is None or clean.prompt.financials.period + QUARTER_LAG <= as_of
    close = MARKET.daily_bars(ticker, as_of - dt.timedelta(days=10), as_of + dt.timedelta(days=1)).value["Adj Close"].iloc[-1]
    shares = MARKET.profile(ticker).value.shares_outstanding
    assert clean.prompt.profile.market_cap == pytest.approx(shares * close)


def test_as_of_is_the_latest_sunday_and_label_is_next_week():
    built = build_prompt(MARKET, "AAPL", dt.date(2023, 11, 22))  # a Wednesday
    assert built.prompt.as_of == dt.date(2023, 11, 19) == week_start(dt.date(2023, 11, 19))
    assert built.prompt.target_end == dt.date(2023, 11, 26)
    closes = MARKET.daily_bars("AAPL", dt.date(2023, 11, 1), dt.date(2023, 12, 1)).value["Adj Close"]
    expected = closes.loc[:"2023-11-26"].iloc[-1] / closes.loc[:"2023-11-19"].iloc[-1] - 1
    assert built.realized_return == pytest.approx(expected)
    assert built.label is bin_of_return(expected)


def test_weeks_news_and_history_length_are_configurable():
    built = build_prompt(MARKET, "MSFT", dt.date(2023, 12, 17), WindowConfig(weeks=6, news_per_week=2, with_financials=False))
    assert len(built.prompt.weeks) == 6
    assert all(len(w.news) <= 2 for w in built.prompt.weeks)
    assert built.prompt.financials is None
    again = build_prompt(MARKET, "MSFT", dt.date(2023, 12, 17), WindowConfig(weeks=6, news_per_week=2, with_financials=False))
    assert again.prompt == built.prompt  # deterministic news selection


def test_dataset_uses_the_index_as_it_was_and_splits_by_date():
    days = [dt.date(2023, 12, 10), dt.date(2023, 12, 17)]
    rows = build_rows(MARKET, days)
    assert {r.ticker for r in rows} >= {"WBA", "INTC", "DOW"}  # members in 2023
    assert "AMZN" not in {r.ticker for r in rows}  # joined in 2024
    train, held = split_by_date(rows, dt.date(2023, 12, 17))
    assert train and held
    assert max(r.prompt.target_end for r in train) <= min(r.as_of for r in held)
