"""Dow Jones Industrial Average membership, with the dates each change took effect.

A historical forecast must use the index as it was on the forecast date, so membership is a
function of the date, never a fixed list.

Coverage starts on :data:`COVERAGE_START` (2020-08-31, when Salesforce, Amgen and Honeywell
replaced ExxonMobil, Pfizer and Raytheon): from that day until 2024-02-26 the index was the
2023 list below. For dates before coverage every function here raises
:class:`~forecast.errors.NoDataError` instead of guessing an older index.

Changes take effect before the open on their effective date: on that date the new member is
in and the old one is out.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass

from forecast.errors import NoDataError, UnknownTickerError

INDEX_SIZE = 30
COVERAGE_START = dt.date(2020, 8, 31)

INDEX_2023: tuple[str, ...] = (
    "AAPL", "AMGN", "AXP", "BA", "CAT", "CRM", "CSCO", "CVX", "DIS", "DOW",
    "GS", "HD", "HON", "IBM", "INTC", "JNJ", "JPM", "KO", "MCD", "MMM",
    "MRK", "MSFT", "NKE", "PG", "TRV", "UNH", "V", "VZ", "WBA", "WMT",
)  # fmt: skip


@dataclass(frozen=True)
class IndexChange:
    """Tickers ``added`` replace tickers ``removed`` from ``effective`` on."""

    effective: dt.date
    added: tuple[str, ...]
    removed: tuple[str, ...]


CHANGES: tuple[IndexChange, ...] = (
    IndexChange(dt.date(2024, 2, 26), added=("AMZN",), removed=("WBA",)),
    IndexChange(dt.date(2024, 11, 8), added=("NVDA", "SHW"), removed=("INTC", "DOW")),
    IndexChange(dt.date(2026, 6, 29), added=("GOOGL",), removed=("VZ",)),
)


def _build_periods() -> tuple[tuple[dt.date, ...], tuple[tuple[str, ...], ...]]:
    """Replay :data:`CHANGES` over the 2023 list: one (start date, sorted members) per period."""
    starts = [COVERAGE_START]
    current = set(INDEX_2023)
    periods = [tuple(sorted(current))]
    for change in sorted(CHANGES, key=lambda c: c.effective):
        missing = set(change.removed) - current
        duplicate = set(change.added) & current
        if missing or duplicate or len(change.added) != len(change.removed):
            raise ValueError(f"inconsistent index change on {change.effective}: {change}")
        current = (current - set(change.removed)) | set(change.added)
        starts.append(change.effective)
        periods.append(tuple(sorted(current)))
    if any(len(p) != INDEX_SIZE for p in periods):
        raise ValueError("every Dow 30 period must have 30 members")
    return tuple(starts), tuple(periods)


_PERIOD_STARTS, _PERIOD_MEMBERS = _build_periods()

ALL_TICKERS: tuple[str, ...] = tuple(sorted({t for p in _PERIOD_MEMBERS for t in p}))
"""Every ticker that was a member on some date since :data:`COVERAGE_START`, sorted."""


def _check_covered(on: dt.date) -> None:
    if on < COVERAGE_START:
        raise NoDataError(
            f"Dow 30 membership is recorded from {COVERAGE_START.isoformat()} on, "
            f"not for {on.isoformat()}"
        )


def members(on: dt.date) -> tuple[str, ...]:
    """The 30 members on date ``on``, sorted. Raises ``NoDataError`` before coverage."""
    _check_covered(on)
    return _PERIOD_MEMBERS[bisect.bisect_right(_PERIOD_STARTS, on) - 1]


def is_member(ticker: str, on: dt.date) -> bool:
    """Whether ``ticker`` (any case) was in the index on ``on``."""
    return ticker.strip().upper() in members(on)


def membership_periods(ticker: str) -> tuple[tuple[dt.date, dt.date | None], ...]:
    """The ``[joined, left)`` spans of ``ticker`` since coverage; ``left`` is None if still in.

    A span that starts on :data:`COVERAGE_START` may have started earlier.
    """
    symbol = ticker.strip().upper()
    spans: list[tuple[dt.date, dt.date | None]] = []
    joined: dt.date | None = None
    for start, period in zip(_PERIOD_STARTS, _PERIOD_MEMBERS, strict=True):
        if symbol in period and joined is None:
            joined = start
        elif symbol not in period and joined is not None:
            spans.append((joined, start))
            joined = None
    if joined is not None:
        spans.append((joined, None))
    return tuple(spans)


def require_member(ticker: str, on: dt.date) -> str:
    """Return the canonical (upper-case) ticker, or raise ``UnknownTickerError`` saying why.

    The message names the date the ticker left or joined the index, e.g.
    ``"WBA left the Dow 30 on 2024-02-26"``.
    """
    symbol = ticker.strip().upper()
    if is_member(symbol, on):
        return symbol
    spans = membership_periods(symbol)
    if not spans:
        raise UnknownTickerError(
            f"{symbol!r} is not a Dow 30 member (no membership since {COVERAGE_START.isoformat()})"
        )
    left_before = [left for _, left in spans if left is not None and left <= on]
    if left_before:
        raise UnknownTickerError(
            f"{symbol} left the Dow 30 on {max(left_before).isoformat()}; "
            f"it was not a member on {on.isoformat()}"
        )
    joined_after = min(joined for joined, _ in spans if joined > on)
    raise UnknownTickerError(
        f"{symbol} joined the Dow 30 on {joined_after.isoformat()}; "
        f"it was not a member on {on.isoformat()}"
    )
