"""The scorecard route's statistics: a Wilson interval per version and a two-proportion z-test
between versions (and another adapter's), from what the forecast log aggregates."""

from __future__ import annotations

from dataclasses import replace

import pytest

from service.forecast_log import Scorecard
from service.routes.scorecard import card_out, compare


def card(version: str | None, scored: int, accuracy: float | None, adapter: str = "a") -> Scorecard:
    return Scorecard(
        adapter=adapter, version=version, forecasts=scored, parsed=scored, scored=scored,
        binary_accuracy=accuracy, mse=4.0 if scored else None, mean_latency_s=None,
        mean_ttft_s=None, tokens_per_s=None,
    )  # fmt: skip


def test_card_carries_the_wilson_interval() -> None:
    out = card_out(card("v1", 10, 0.8))
    assert out.binary_accuracy_ci is not None
    assert (round(out.binary_accuracy_ci.low, 4), round(out.binary_accuracy_ci.high, 4)) == (0.4902, 0.9433)
    assert out.mse_ci is None  # no second moment from the log: no MSE interval
    assert card_out(card("v2", 0, None)).binary_accuracy_ci is None


def test_card_carries_the_mse_interval_from_the_logs_second_moment() -> None:
    # squared errors 1 and 9: MSE 5, mean of their squares 41; by hand: sample variance
    # (41 - 25) * 2 / 1 = 32, half-width 1.96 * sqrt(32 / 2) = 7.84
    c = replace(card("v1", 2, 0.5), mse=5.0, mse_second_moment=41.0)
    out = card_out(c)
    assert out.mse_ci is not None
    assert out.mse_ci.low == pytest.approx(5 - 7.84, abs=1e-3) and out.mse_ci.high == pytest.approx(5 + 7.84, abs=1e-3)
    assert card_out(replace(c, scored=1)).mse_ci is None  # one error: no spread to estimate


def test_compare_pairs_versions_newest_first_and_against_the_other_arm() -> None:
    ours = [card("v10", 200, 0.6), card("v2", 300, 0.5), card("v3", 0, None)]  # v3: unscored
    theirs = [card("v1", 83, 5 / 83, adapter="b")]
    tests = compare(ours, theirs)
    assert [(t.a, t.b) for t in tests] == [("a@v10", "a@v2"), ("a@v2", "b@v1"), ("a@v10", "b@v1")]
    first = tests[0]  # 120/200 vs 150/300, by hand: z 2.1979, p 0.0280
    assert (first.scored_a, first.scored_b) == (200, 300)
    assert first.difference == pytest.approx(0.1)
    assert first.z == pytest.approx(2.1979, abs=1e-4) and first.p_value == pytest.approx(0.02796, abs=1e-4)


def test_compare_with_one_version_is_empty() -> None:
    assert compare([card("v1", 10, 0.8)], []) == []
