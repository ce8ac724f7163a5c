"""Realized accuracy: fill each logged forecast's weekly return once its week has closed.

The realized return is the one the prompt builder labels with: adjusted close on or before
the target Sunday over adjusted close on or before ``as_of`` (its Sunday), from the same price
provider the prompts come from. A week is closed on its target Sunday; a week the provider
cannot price yet stays pending and is tried again on the next run.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import pandas as pd

from forecast.errors import ForecastError
from forecast.providers.base import PriceProvider
from forecast.windows import close_on_or_before
from service.forecast_log import ForecastLog, Scorecard
from service.telemetry import Telemetry

log = logging.getLogger(__name__)


def realized_return(
    prices: PriceProvider, ticker: str, as_of: dt.date, target_end: dt.date
) -> float | None:
    """The return over ``as_of -> target_end``, or None if the week cannot be priced yet."""
    bars = prices.daily_bars(ticker, as_of - dt.timedelta(days=10), target_end + dt.timedelta(days=1))
    closes = bars.value["Adj Close"]
    in_week = closes.loc[pd.Timestamp(as_of + dt.timedelta(days=1)) : pd.Timestamp(target_end)]
    p0, p1 = close_on_or_before(closes, as_of), close_on_or_before(closes, target_end)
    if in_week.empty or p0 is None or p1 is None:
        return None
    return p1 / p0 - 1.0


class Scorer:
    def __init__(
        self,
        forecast_log: ForecastLog,
        prices: PriceProvider,
        telemetry: Telemetry,
        now: Callable[[], dt.datetime],
    ) -> None:
        self._log = forecast_log
        self._prices = prices
        self._telemetry = telemetry
        self._now = now

    def score_pending(self) -> int:
        """Score every closed, unscored week; return the number of rows updated."""
        now = self._now()
        updated = 0
        for ticker, as_of, target_end in self._log.pending_weeks(closed_on=now.date()):
            try:
                ret = realized_return(self._prices, ticker, as_of, target_end)
            except ForecastError as exc:
                log.info("scorer: %s week %s not priced: %s", ticker, as_of, exc)
                continue
            if ret is not None:
                updated += self._log.set_realized(ticker, as_of, ret, now)
        self.publish()
        return updated

    def publish(self) -> list[Scorecard]:
        """Copy per-version scorecards into the realized-accuracy gauges."""
        cards = [c for c in self._log.scorecards() if c.version is not None]
        for card in cards:
            assert card.version is not None
            self._telemetry.scored.labels(card.adapter, card.version).set(card.scored)
            if card.binary_accuracy is not None:
                self._telemetry.accuracy.labels(card.adapter, card.version).set(card.binary_accuracy)
            if card.mse is not None:
                self._telemetry.mse.labels(card.adapter, card.version).set(card.mse)
        return cards
