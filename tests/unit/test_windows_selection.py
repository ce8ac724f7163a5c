"""What enters a week's prompt: news selection (near-duplicates dropped) and financials by
publication day."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from forecast.bins import Bin
from forecast.types import BasicFinancials, NewsItem
from forecast.windows import (
    SPAM_PREFIXES,
    WindowConfig,
    close_on_or_before,
    closed_week_return,
    headline_tokens,
    latest_financials,
    near_duplicate,
    published_on,
    select_news,
    week_return,
    weekly_labels,
)

# Real AXP items of 2023-10-20/21 (forecast/snapshot/news/AXP.jsonl).
SLUMPS_250 = "Dow Jones Slumps 250 Points, Weighed Down By American Express; Nasdaq Tests 13,000"
SLUMPS_300 = "Dow Jones Slumps 300 Points, Weighed Down By American Express; Tesla Violates Key Level"
SLUMPS_287 = "Dow Jones Slumps 287 Points, Weighed Down By American Express; Tesla Violates Key Level"


def item(hour: int, headline: str, summary: str = "The Dow Jones fell.") -> NewsItem:
    return NewsItem(published=dt.datetime(2023, 10, 20, hour, tzinfo=dt.UTC), headline=headline, summary=summary)


def headlines(items: list[NewsItem], k: int = 5) -> list[str]:
    return [n.headline for n in select_news(items, "AXP", "American Express Co", k)]


def test_near_duplicate_headlines_keep_the_newest():
    assert headlines([item(15, SLUMPS_300), item(16, SLUMPS_287)]) == [SLUMPS_287]


def test_different_stories_with_shared_words_both_stay():
    assert headlines([item(15, SLUMPS_250), item(16, SLUMPS_300)]) == [SLUMPS_250, SLUMPS_300]


def test_a_near_duplicate_naming_the_company_replaces_one_that_does_not():
    quiet = "Dow Jones slumps 300 points as yields climb; Tesla violates key level"
    naming = "Dow Jones slumps 280 points as yields climb; Tesla violates key level"
    items = [item(15, naming, "American Express weighs."), item(16, quiet)]
    assert headlines(items, k=1) == [naming]


def test_near_duplicates_do_not_take_a_slot():
    other = "American Express raises its outlook"
    items = [item(14, other), item(15, SLUMPS_300), item(16, SLUMPS_287)]
    assert headlines(items, k=2) == [other, SLUMPS_287]


def report(period: str, *, filed: str | None = None, annual: bool = False) -> BasicFinancials:
    return BasicFinancials(
        period=dt.date.fromisoformat(period), metrics={"eps": 1.0},
        filed=None if filed is None else dt.date.fromisoformat(filed),
        frequency="annual" if annual else "quarterly",
    )


def test_a_report_is_public_on_its_filing_date_else_after_the_lag():
    assert published_on(report("2023-09-30", filed="2023-10-20")) == dt.date(2023, 10, 20)
    assert published_on(report("2023-09-30")) == dt.date(2023, 11, 14)  # + 45 days
    assert published_on(report("2023-12-31", annual=True)) == dt.date(2024, 3, 30)  # + 90 days
    lags = WindowConfig(quarterly_report_lag_days=10, annual_report_lag_days=20)
    assert published_on(report("2023-09-30"), lags) == dt.date(2023, 10, 10)
    assert published_on(report("2023-12-31", annual=True), lags) == dt.date(2024, 1, 20)


def test_latest_financials_admits_reports_by_publication():
    reports = [report("2023-06-30"), report("2023-09-30", filed="2023-10-20")]
    assert latest_financials(reports, dt.date(2023, 10, 1)).period == dt.date(2023, 6, 30)
    assert latest_financials(reports, dt.date(2023, 10, 22)).period == dt.date(2023, 9, 30)
    assert latest_financials([report("2023-09-30")], dt.date(2023, 11, 12)) is None
    assert latest_financials([report("2023-09-30")], dt.date(2023, 11, 19)) is not None


# -- boundaries mutation testing showed unguarded (tests/MUTATION.md) ----------------------

CLOSES = pd.Series(
    [100.0, 101.0, 103.0],
    index=pd.DatetimeIndex(["2023-10-13", "2023-10-20", "2023-10-27"]),  # Fridays
)


def test_a_close_on_the_day_itself_counts_and_none_before_the_first() -> None:
    assert close_on_or_before(CLOSES, dt.date(2023, 10, 12)) is None
    assert close_on_or_before(CLOSES, dt.date(2023, 10, 13)) == 100.0  # the first close, that day
    assert close_on_or_before(CLOSES, dt.date(2023, 10, 19)) == 100.0
    assert close_on_or_before(CLOSES, dt.date(2023, 10, 20)) == 101.0


def test_week_return_needs_both_boundaries() -> None:
    assert week_return(CLOSES, dt.date(2023, 10, 15)) == pytest.approx(101.0 / 100.0 - 1)
    assert week_return(CLOSES, dt.date(2023, 10, 8)) is None  # nothing on or before the start
    assert week_return(CLOSES, dt.date(2023, 10, 29)) == 0.0  # as priced; closed_week_return decides


def test_a_week_is_closed_once_its_friday_is_priced() -> None:
    # The week of Sunday 22nd closes on Friday 27th, the last close here: closed.
    assert closed_week_return(CLOSES, dt.date(2023, 10, 22)) == pytest.approx(103.0 / 101.0 - 1)
    thursday = pd.Series([100.0, 101.0, 102.0], index=pd.DatetimeIndex(["2023-10-13", "2023-10-20", "2023-10-26"]))
    assert closed_week_return(thursday, dt.date(2023, 10, 22)) is None  # its Friday is not in
    assert closed_week_return(CLOSES.iloc[:0], dt.date(2023, 10, 15)) is None


def test_headline_tokens_are_lower_case_with_numbers_masked() -> None:
    assert headline_tokens("Dow Slumps 250 Points") == frozenset({"dow", "slumps", "#", "points"})


def test_near_duplicate_at_exactly_the_threshold() -> None:
    a = frozenset("abcde")
    assert near_duplicate(a, frozenset("abcd"))  # 4/5 = 0.8: one story
    assert not near_duplicate(frozenset("abc"), frozenset("abd"))  # 2/4
    assert not near_duplicate(frozenset("a"), frozenset())  # a headline and an empty one


def test_news_naming_the_company_in_any_case_come_first_and_repeats_drop() -> None:
    named = item(9, "AMERICAN EXPRESS beats estimates", "Card spending rose.")
    other = item(10, "Oil rises on supply worries", "Crude gained.")
    repeat = item(11, "oil rises on supply worries", "Crude gained again.")
    assert headlines([named, other, repeat], k=1) == [named.headline]
    assert headlines([other, repeat], k=5) == [repeat.headline]  # the newer copy of one headline
    spam = item(12, "Tech stocks to watch", SPAM_PREFIXES[0] + " Click here.")
    assert headlines([spam, other], k=5) == [other.headline]


def test_news_are_walked_by_publication_time_not_list_order() -> None:
    old = item(9, "Shares of American Express edge up", "American Express.")
    new = item(15, "American Express shares climb further", "American Express.")
    assert headlines([new, old], k=1) == [new.headline]
    assert headlines([new, old], k=2) == [old.headline, new.headline]  # shown oldest first


def test_financials_published_on_the_day_count_and_a_quarter_beats_a_year() -> None:
    day = dt.date(2023, 10, 22)
    on_the_day = BasicFinancials(period=dt.date(2023, 6, 30), metrics={"pe": 1}, filed=day)
    assert latest_financials([on_the_day], day) is not None
    year = BasicFinancials(period=dt.date(2022, 12, 31), metrics={"pe": 2}, frequency="annual",
                           filed=dt.date(2023, 2, 1))
    quarter = BasicFinancials(period=dt.date(2022, 12, 31), metrics={"pe": 3}, filed=dt.date(2023, 2, 1))
    block = latest_financials([quarter, year], day)
    assert block is not None and block.metrics == {"pe": 3}
    block = latest_financials([year, quarter], day)
    assert block is not None and block.metrics == {"pe": 3}
    lagged = BasicFinancials(period=dt.date(2023, 6, 30), metrics={"pe": 4})  # public 45 days on
    assert latest_financials([lagged], dt.date(2023, 8, 13), WindowConfig(quarterly_report_lag_days=44)) is not None
    assert latest_financials([lagged], dt.date(2023, 8, 13)) is None


class _Prices:
    """A price provider over fixed Friday closes; records the window it was asked for."""

    def __init__(self, closes: pd.Series) -> None:
        self.closes, self.asked = closes, []

    def daily_bars(self, ticker: str, start: dt.date, end: dt.date) -> Any:
        self.asked.append((start, end))
        return SimpleNamespace(value=pd.DataFrame({"Adj Close": self.closes}))


def test_weekly_labels_are_the_closed_weeks_inside_the_range() -> None:
    closes = pd.Series([100.0, 102.5, 99.0], index=pd.DatetimeIndex(["2023-10-13", "2023-10-20", "2023-10-27"]))
    market = SimpleNamespace(prices=_Prices(closes))
    # +2.5 % (up 2-3 %), then 102.5 -> 99.0 = -3.4 % (down 3-4 %); the week of the 29th ends past the range.
    assert weekly_labels(market, "AXP", dt.date(2023, 10, 15), dt.date(2023, 10, 29)) == [
        (dt.date(2023, 10, 15), Bin.U3), (dt.date(2023, 10, 22), Bin.D4)]
    # A start inside a week begins at the next Sunday; a week that ends after `end` is left out.
    assert weekly_labels(market, "AXP", dt.date(2023, 10, 18), dt.date(2023, 10, 28)) == []
    assert weekly_labels(market, "AXP", dt.date(2023, 10, 18), dt.date(2023, 10, 29)) == [
        (dt.date(2023, 10, 22), Bin.D4)]
    assert market.prices.asked[0] == (dt.date(2023, 10, 5), dt.date(2023, 10, 30))


def test_market_cap_at_the_close_or_unknown_without_a_share_count() -> None:
    from forecast.types import CompanyProfile
    from forecast.windows import point_in_time_profile

    fields = {"ticker": "AXP", "name": "American Express Co", "industry": "Financial Services",
              "ipo": "1977-05-18", "market_cap": 999.0, "currency": "USD", "country": "US", "exchange": "NYSE"}
    assert point_in_time_profile(CompanyProfile(**fields, shares_outstanding=2.0), 150.0).market_cap == 300.0
    assert point_in_time_profile(CompanyProfile(**fields, shares_outstanding=None), 150.0).market_cap is None


def test_news_of_a_company_without_a_name_are_matched_by_ticker() -> None:
    named = item(9, "AXP beats estimates", "Card spending rose.")
    other = item(10, "Oil rises on supply worries", "Crude gained.")
    assert [n.headline for n in select_news([named, other], "AXP", "", 1)] == [named.headline]
