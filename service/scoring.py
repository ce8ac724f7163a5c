"""Realized accuracy: fill each logged forecast's weekly return once its week has closed.

The realized return is the one the prompt builder labels with
(:func:`forecast.windows.closed_week_return`): adjusted close on or before the target Sunday
over adjusted close on or before ``as_of`` (its Sunday), from the same price provider the
prompts come from, once the week's Friday (or a later day) is priced. A week the provider
cannot price yet stays pending and is tried again on the next run.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from forecast.errors import ForecastError
from forecast.providers.base import PriceProvider
from forecast.windows import WEEK, closed_week_return
from service.forecast_log import ForecastLog, Scorecard
from service.telemetry import Telemetry

log = logging.getLogger(__name__)


def realized_return(prices: PriceProvider, ticker: str, as_of: dt.date) -> float | None:
    """The return of the week ``as_of -> as_of + 7``, or None if it cannot be priced yet.
    Bars a week past its end are asked for, so a week whose Friday was a holiday closes as
    soon as the next week's first close exists."""
    bars = prices.daily_bars(ticker, as_of - dt.timedelta(days=10), as_of + 2 * WEEK)
    return closed_week_return(bars.value["Adj Close"], as_of)


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
        for ticker, as_of, _ in self._log.pending_weeks(closed_on=now.date()):
            try:
                ret = realized_return(self._prices, ticker, as_of)
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
