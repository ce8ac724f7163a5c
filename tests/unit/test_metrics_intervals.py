"""Intervals and tests of forecast/metrics.py against values computed by hand."""

from __future__ import annotations

import math
from statistics import fmean

import pytest

from forecast.bins import Bin
from forecast.metrics import (
    bootstrap_interval,
    mean_interval,
    mse,
    squared_errors,
    two_proportion_test,
    wilson_interval,
)


def test_wilson_8_of_10() -> None:
    # center (0.8 + 1.96²/20) / (1 + 1.96²/10) = 0.7168, half-width 1.96·√(0.016 + 0.0096)/1.3842
    ci = wilson_interval(0.8, 10)
    assert (round(ci.low, 4), round(ci.high, 4)) == (0.4902, 0.9433)
    assert ci.level == 0.95


def test_wilson_edges_stay_inside_0_1() -> None:
    none = wilson_interval(0.0, 10)  # 0/10: [0, z²/(n+z²)] = [0, 0.2775]
    assert none.low == 0.0 and none.high == pytest.approx(0.2775, abs=1e-4)
    every = wilson_interval(1.0, 10)
    assert every.high == pytest.approx(1.0) and every.low == pytest.approx(0.7225, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(0.5, 0)


def test_two_proportion_test_statsmodels_docs_example() -> None:
    # statsmodels' proportions_ztest([5, 12], [83, 99]): pooled 17/182,
    # se √(0.0934·0.9066·(1/83 + 1/99)) = 0.04331, z = (0.06024 - 0.12121)/0.04331 = -1.4078
    t = two_proportion_test(5, 83, 12, 99)
    assert t.difference == pytest.approx(5 / 83 - 12 / 99)
    assert t.z == pytest.approx(-1.4078, abs=1e-4)
    assert t.p_value == pytest.approx(0.1592, abs=1e-4)


def test_two_proportion_test_by_hand() -> None:
    # 120/200 vs 150/300: pooled 0.54, se √(0.54·0.46·(1/200 + 1/300)) = 0.045497, z 2.1979
    t = two_proportion_test(120, 200, 150, 300)
    assert t.z == pytest.approx(2.1979, abs=1e-4)
    assert t.p_value == pytest.approx(0.02796, abs=1e-4)
    assert two_proportion_test(150, 300, 120, 200).z == pytest.approx(-t.z)


def test_two_proportion_test_without_variance_is_no_evidence() -> None:
    t = two_proportion_test(10, 10, 7, 7)
    assert (t.difference, t.z, t.p_value) == (0.0, 0.0, 1.0)


def test_mean_interval_from_aggregates() -> None:
    values = [1.0, 4.0, 9.0, 0.0, 16.0]
    m, m2 = fmean(values), fmean(v * v for v in values)  # 6.0, 70.8
    ci = mean_interval(m, m2, len(values))
    # sample variance (70.8 - 36)·5/4 = 43.5; half-width 1.96·√(43.5/5) = 5.7812
    assert ci.low == pytest.approx(6.0 - 5.7812, abs=1e-3)
    assert ci.high == pytest.approx(6.0 + 5.7812, abs=1e-3)


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    preds = [Bin.U1, Bin.U3, Bin.D2, Bin.U5, Bin.D1, Bin.U2, Bin.D5, Bin.U1]
    labels = [Bin.U2, Bin.U1, Bin.D1, Bin.D3, Bin.U1, Bin.U2, Bin.D4, Bin.D1]
    errors = squared_errors(preds, labels)
    assert fmean(errors) == pytest.approx(mse(preds, labels))
    a = bootstrap_interval(errors, seed=7)
    assert a == bootstrap_interval(errors, seed=7)
    assert a.low < fmean(errors) < a.high
    assert min(errors) <= a.low and a.high <= max(errors)


def test_bootstrap_of_a_constant_is_that_constant() -> None:
    ci = bootstrap_interval([2.25] * 5, seed=1, resamples=50)
    assert math.isclose(ci.low, 2.25) and math.isclose(ci.high, 2.25)
