"""benchmarks/speed_accuracy.py's intervals: the per-forecast squared errors it reads from the
log average to the scorecard's MSE, and each row gets a Wilson and a seeded bootstrap interval."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from benchmarks.speed_accuracy import intervals, squared_errors_logged
from forecast.bins import Bin
from service.forecast_log import ForecastLog, ForecastRow, prediction_columns

WEEK = dt.date(2023, 12, 3)


def _row(i: int, predicted: Bin | None, version: str = "v1") -> ForecastRow:
    return ForecastRow(
        id=f"f{i}", created_at=dt.datetime(2023, 12, 4, tzinfo=dt.UTC), route="forecast",
        ticker=f"T{i}", as_of=WEEK, target_end=WEEK + dt.timedelta(days=7), adapter="fingpt",
        version=version, base="llama", base_model="tiny", arm="fingpt", prompt_hash="0" * 64,
        raw_text="", **prediction_columns(predicted),
    )  # fmt: skip


def test_logged_squared_errors_average_to_the_scorecard_mse(tmp_path: Path) -> None:
    log = ForecastLog(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    predicted = [Bin.U1, Bin.U3, Bin.D2, None, Bin.U5]  # one unparsed: not scored
    for i, p in enumerate(predicted):
        log.add(_row(i, p))
    log.add(_row(9, Bin.D5, version="v2"))  # another version: not counted
    returns = [0.005, -0.015, -0.025, 0.01, 0.035]  # realized bins U1, D2, D3, U1, U4
    for i, ret in enumerate(returns):
        log.set_realized(f"T{i}", WEEK, ret, dt.datetime(2023, 12, 11, tzinfo=dt.UTC))
    errors = squared_errors_logged(log.engine, "fingpt", "v1")
    card = next(c for c in log.scorecards("fingpt") if c.version == "v1")
    assert len(errors) == card.scored == 4
    assert sum(errors) / len(errors) == pytest.approx(card.mse)
    # midpoints: U1 .5 vs .5, U3 2.5 vs D2 -1.5, D2 -1.5 vs D3 -2.5, U5 4.5 vs U4 3.5
    assert sorted(errors) == pytest.approx([0.0, 1.0, 1.0, 16.0])
    log.close()


def test_intervals_are_wilson_and_a_seeded_bootstrap() -> None:
    got = intervals(10, 0.8, [0.0, 1.0, 4.0, 9.0, 1.0], seed=3)
    assert got["binary_accuracy_ci"]["low"] == pytest.approx(0.4902, abs=1e-4)
    assert got["binary_accuracy_ci"]["high"] == pytest.approx(0.9433, abs=1e-4)
    assert 0.0 <= got["mse_ci"]["low"] <= 3.0 <= got["mse_ci"]["high"] <= 9.0
    assert got == intervals(10, 0.8, [0.0, 1.0, 4.0, 9.0, 1.0], seed=3)
    assert intervals(0, None, [], seed=0) == {"binary_accuracy_ci": None, "mse_ci": None}
