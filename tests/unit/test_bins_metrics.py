import math

import pytest

from forecast.answer import parse_answer
from forecast.bins import Bin, bin_of_phrase, bin_of_return
from forecast.metrics import binary_accuracy, majority_bin, mse, naive_baselines, rouge_by_section


@pytest.mark.parametrize(
    ("ret", "expected"),
    [(0.0, Bin.U1), (0.004, Bin.U1), (0.01, Bin.U1), (0.0101, Bin.U2), (0.05, Bin.U5), (0.0501, Bin.U5_PLUS),
     (-0.0001, Bin.D1), (-0.02, Bin.D2), (-0.031, Bin.D4), (-0.2, Bin.D5_PLUS)],
)
def test_bin_of_return(ret, expected):
    assert bin_of_return(ret) is expected


def test_nan_return_is_an_error():
    with pytest.raises(ValueError):
        bin_of_return(math.nan)


@pytest.mark.parametrize("b", list(Bin))
def test_phrase_round_trip_and_midpoints(b):
    assert bin_of_phrase(b.phrase()) is b
    assert abs(b.midpoint) == b.magnitude - 0.5
    assert (b.midpoint > 0) == b.is_up


def test_binary_accuracy_and_mse():
    preds = [Bin.U3, Bin.D1, Bin.U5_PLUS]
    labels = [Bin.U1, Bin.D5_PLUS, Bin.D2]
    assert binary_accuracy(preds, labels) == pytest.approx(2 / 3)
    assert mse(preds, labels) == pytest.approx(((2.5 - 0.5) ** 2 + (-0.5 + 5.5) ** 2 + (5.5 + 1.5) ** 2) / 3)
    with pytest.raises(ValueError):
        mse(preds, labels[:2])


def test_baselines():
    labels = [Bin.U2, Bin.D1, Bin.U1]
    last = [Bin.U2, Bin.U1, Bin.D3]
    out = naive_baselines(labels, last, train_labels=[Bin.D2, Bin.D2, Bin.U1])
    assert majority_bin([Bin.D2, Bin.D2, Bin.U1]) is Bin.D2
    assert out["majority_bin"].binary_accuracy == pytest.approx(1 / 3)
    assert out["always_up_0_1"].binary_accuracy == pytest.approx(2 / 3)
    assert out["momentum"].binary_accuracy == pytest.approx(1 / 3)
    assert out["momentum"].mse == pytest.approx((0 + 1 + 9) / 3)


def test_rouge_per_section_is_one_on_identical_answers_and_lower_otherwise():
    a = parse_answer("[Positive Developments]:\n1. revenue grew\n[Potential Concerns]:\n1. debt is high\n"
                     "[Prediction & Analysis]:\nPrediction: Up by 1-2%\nAnalysis: growth wins")
    b = parse_answer("[Positive Developments]:\n1. margins shrank\n[Potential Concerns]:\n1. debt is high\n"
                     "[Prediction & Analysis]:\nPrediction: Down by 1-2%\nAnalysis: debt wins")
    same = rouge_by_section([a], [a])
    assert all(v == pytest.approx(1.0) for sec in same.values() for v in sec.values())
    diff = rouge_by_section([b], [a])
    assert diff["concerns"]["rouge1"] == pytest.approx(1.0)
    assert diff["positive"]["rouge1"] < 0.5
