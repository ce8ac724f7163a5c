"""Forecast metrics: binary (up/down) accuracy, MSE on bin midpoints, ROUGE per answer section,
and the naive baselines that give them context."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

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
