"""Dow 30 membership by date: each change, the day before and the day it takes effect."""

from __future__ import annotations

import datetime as dt
import socket

import pytest

from forecast import universe
from forecast.errors import NoDataError, UnknownTickerError
from forecast.universe import (
    ALL_TICKERS,
    CHANGES,
    COVERAGE_START,
    INDEX_2023,
    is_member,
    members,
    membership_periods,
    require_member,
)

D = dt.date
ONE_DAY = dt.timedelta(days=1)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access in a unit test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_2023_index_is_the_snapshot_news_universe() -> None:
    assert members(D(2023, 6, 1)) == tuple(sorted(INDEX_2023))
    assert len(set(INDEX_2023)) == 30


EDGES = [COVERAGE_START, D(2023, 1, 1), D(2030, 1, 1)]
EDGES += [day for c in CHANGES for day in (c.effective - ONE_DAY, c.effective)]


@pytest.mark.parametrize("day", EDGES)
def test_always_thirty_sorted_unique(day: dt.date) -> None:
    tickers = members(day)
    assert len(tickers) == 30
    assert list(tickers) == sorted(set(tickers))


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: c.effective.isoformat())
def test_each_change_takes_effect_on_its_date(change: universe.IndexChange) -> None:
    before, on = members(change.effective - ONE_DAY), members(change.effective)
    for added in change.added:
        assert added not in before and added in on
    for removed in change.removed:
        assert removed in before and removed not in on
    assert set(on) - set(before) == set(change.added)
    assert set(before) - set(on) == set(change.removed)


def test_amzn_for_wba() -> None:
    assert is_member("WBA", D(2024, 2, 23)) and not is_member("AMZN", D(2024, 2, 23))
    assert is_member("AMZN", D(2024, 2, 26)) and not is_member("WBA", D(2024, 2, 26))


def test_nvda_shw_for_intc_dow() -> None:
    assert {"INTC", "DOW"} <= set(members(D(2024, 11, 7)))
    assert not {"NVDA", "SHW"} & set(members(D(2024, 11, 7)))
    assert {"NVDA", "SHW"} <= set(members(D(2024, 11, 8)))
    assert not {"INTC", "DOW"} & set(members(D(2024, 11, 8)))


def test_googl_for_vz() -> None:
    assert is_member("VZ", D(2026, 6, 28)) and not is_member("GOOGL", D(2026, 6, 28))
    assert is_member("GOOGL", D(2026, 6, 29)) and not is_member("VZ", D(2026, 6, 29))


def test_all_tickers_are_the_34_past_and_present_members() -> None:
    assert len(ALL_TICKERS) == 34
    assert set(ALL_TICKERS) == set(INDEX_2023) | {"AMZN", "NVDA", "SHW", "GOOGL"}
    assert list(ALL_TICKERS) == sorted(ALL_TICKERS)


def test_is_member_ignores_case_and_spaces() -> None:
    assert is_member(" aapl ", D(2024, 1, 2))
    assert not is_member("TSLA", D(2024, 1, 2))


def test_require_member_returns_canonical_ticker() -> None:
    assert require_member("msft", D(2024, 1, 2)) == "MSFT"


def test_require_member_names_the_leaving_date() -> None:
    with pytest.raises(UnknownTickerError, match="WBA left the Dow 30 on 2024-02-26"):
        require_member("WBA", D(2024, 3, 1))
    with pytest.raises(UnknownTickerError, match="INTC left the Dow 30 on 2024-11-08"):
        require_member("INTC", D(2025, 1, 6))


def test_require_member_names_the_joining_date() -> None:
    with pytest.raises(UnknownTickerError, match="NVDA joined the Dow 30 on 2024-11-08"):
        require_member("NVDA", D(2024, 6, 3))


def test_require_member_rejects_never_members() -> None:
    with pytest.raises(UnknownTickerError, match="'TSLA' is not a Dow 30 member"):
        require_member("TSLA", D(2024, 6, 3))


def test_membership_periods() -> None:
    assert membership_periods("AAPL") == ((COVERAGE_START, None),)
    assert membership_periods("WBA") == ((COVERAGE_START, D(2024, 2, 26)),)
    assert membership_periods("GOOGL") == ((D(2026, 6, 29), None),)
    assert membership_periods("TSLA") == ()


def test_dates_before_coverage_raise() -> None:
    with pytest.raises(NoDataError, match="recorded from 2020-08-31"):
        members(COVERAGE_START - ONE_DAY)
    with pytest.raises(NoDataError):
        is_member("AAPL", D(2019, 1, 2))
