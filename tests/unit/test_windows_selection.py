"""What enters a week's prompt: news selection (near-duplicates dropped) and financials by
publication day."""

from __future__ import annotations

import datetime as dt

from forecast.types import BasicFinancials, NewsItem
from forecast.windows import WindowConfig, latest_financials, published_on, select_news

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
