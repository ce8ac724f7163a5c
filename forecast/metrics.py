"""Forecast metrics: binary (up/down) accuracy, MSE on bin midpoints, ROUGE per answer section,
the naive baselines that give them context, and the intervals and tests that say how much of a
difference is noise (Wilson, two-proportion z-test, bootstrap)."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from statistics import fmean

from rouge_score import rouge_scorer

from forecast.answer import ParsedAnswer
from forecast.bins import Bin

SECTIONS = ("positive", "concerns", "prediction_and_analysis")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _check(preds: Sequence[Bin], labels: Sequence[Bin]) -> None:
    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions for {len(labels)} labels")
    if not labels:
        raise ValueError("no rows to score")


def binary_accuracy(preds: Sequence[Bin], labels: Sequence[Bin]) -> float:
    _check(preds, labels)
    return sum(p.is_up == y.is_up for p, y in zip(preds, labels, strict=True)) / len(labels)


def mse(preds: Sequence[Bin], labels: Sequence[Bin]) -> float:
    """Mean squared error of bin midpoints, in percent² (``U3`` vs ``D1``: (2.5+0.5)² = 9)."""
    _check(preds, labels)
    return sum((p.midpoint - y.midpoint) ** 2 for p, y in zip(preds, labels, strict=True)) / len(labels)


def rouge_by_section(
    predicted: Sequence[ParsedAnswer], reference: Sequence[ParsedAnswer]
) -> dict[str, dict[str, float]]:
    """Mean ROUGE-1/2/L F1 per answer section: ``{"positive": {"rouge1": ...}, ...}``."""
    if len(predicted) != len(reference) or not reference:
        raise ValueError("ROUGE needs equally many predicted and reference answers")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    out: dict[str, dict[str, float]] = {}
    for section in SECTIONS:
        totals = dict.fromkeys(ROUGE_TYPES, 0.0)
        for p, r in zip(predicted, reference, strict=True):
            scores = scorer.score(getattr(r, section), getattr(p, section))
            for t in ROUGE_TYPES:
                totals[t] += scores[t].fmeasure
        out[section] = {t: v / len(reference) for t, v in totals.items()}
    return out


@dataclass(frozen=True)
class Score:
    n: int
    binary_accuracy: float
    mse: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def score(preds: Sequence[Bin], labels: Sequence[Bin]) -> Score:
    return Score(n=len(labels), binary_accuracy=binary_accuracy(preds, labels), mse=mse(preds, labels))


def majority_bin(train_labels: Sequence[Bin]) -> Bin:
    """Most frequent training bin; ties broken by bin order, so the result is deterministic."""
    if not train_labels:
        raise ValueError("no training labels")
    counts = Counter(train_labels)
    order = list(Bin)
    return max(counts, key=lambda b: (counts[b], -order.index(b)))


def naive_baselines(
    labels: Sequence[Bin], last_week: Sequence[Bin], train_labels: Sequence[Bin]
) -> dict[str, Score]:
    """The three baselines: majority training bin, always ``U1`` ("up 0-1%"), and last-week
    momentum (predict the bin the stock moved by in the week before ``as_of``)."""
    majority = majority_bin(train_labels)
    return {
        "majority_bin": score([majority] * len(labels), labels),
        "always_up_0_1": score([Bin.U1] * len(labels), labels),
        "momentum": score(list(last_week), labels),
    }


# -- uncertainty: how much of a difference is noise ------------------------------------------
Z95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    level: float = 0.95


def wilson_interval(accuracy: float, n: int, z: float = Z95) -> Interval:
    """Wilson score interval of a proportion ``accuracy`` observed over ``n`` trials (stays
    inside [0, 1] and is sensible at 0/n and n/n, unlike the normal approximation)."""
    if n <= 0:
        raise ValueError("a proportion needs n > 0")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"proportion {accuracy} outside [0, 1]")
    z2 = z * z
    denom = 1 + z2 / n
    center = (accuracy + z2 / (2 * n)) / denom
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z2 / (4 * n * n)) / denom
    return Interval(max(0.0, center - half), min(1.0, center + half), _level(z))


@dataclass(frozen=True)
class ProportionTest:
    difference: float  # p_a - p_b
    z: float
    p_value: float  # two-sided


def two_proportion_test(hits_a: int, n_a: int, hits_b: int, n_b: int) -> ProportionTest:
    """Pooled two-proportion z-test of H0: p_a == p_b. When every trial in both samples went
    the same way the pooled variance is 0 and the two proportions are equal: z 0, p 1."""
    if n_a <= 0 or n_b <= 0:
        raise ValueError("each sample needs n > 0")
    if not (0 <= hits_a <= n_a and 0 <= hits_b <= n_b):
        raise ValueError("hits must lie in [0, n]")
    p_a, p_b = hits_a / n_a, hits_b / n_b
    pooled = (hits_a + hits_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0.0:
        return ProportionTest(difference=p_a - p_b, z=0.0, p_value=1.0)
    z = (p_a - p_b) / se
    return ProportionTest(difference=p_a - p_b, z=z, p_value=math.erfc(abs(z) / math.sqrt(2)))


def mean_interval(mean: float, mean_of_squares: float, n: int, z: float = Z95) -> Interval:
    """Normal-approximation interval of a mean from two aggregates, the mean and the mean of
    the squared values (what SQL can return); for MSE pass the mean of the fourth powers of the
    errors as ``mean_of_squares``. Uses the sample variance (n - 1)."""
    if n <= 1:
        raise ValueError("an interval of a mean needs n > 1")
    variance = max(0.0, (mean_of_squares - mean * mean) * n / (n - 1))
    half = z * math.sqrt(variance / n)
    return Interval(mean - half, mean + half, _level(z))


def bootstrap_interval(
    values: Sequence[float],
    statistic: Callable[[Sequence[float]], float] = fmean,
    *,
    seed: int = 0,
    resamples: int = 2000,
    level: float = 0.95,
) -> Interval:
    """Percentile bootstrap interval of ``statistic`` (default: the mean) over ``values``,
    resampled with replacement by a seeded generator, so the same input gives the same
    interval."""
    if not values:
        raise ValueError("no values to resample")
    rng = random.Random(seed)
    n = len(values)
    stats = sorted(statistic(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1 - level) / 2
    return Interval(_quantile(stats, tail), _quantile(stats, 1 - tail), level)


def squared_errors(preds: Sequence[Bin], labels: Sequence[Bin]) -> list[float]:
    """Per-row squared error of bin midpoints (their mean is :func:`mse`), for a bootstrap."""
    _check(preds, labels)
    return [(p.midpoint - y.midpoint) ** 2 for p, y in zip(preds, labels, strict=True)]


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _level(z: float) -> float:
    return round(1 - math.erfc(z / math.sqrt(2)), 4)
