"""The answer parser reads every official and teacher answer, and fails loudly otherwise."""

import pytest

from forecast.answer import parse_answer
from forecast.bins import Bin
from forecast.dataset import official_rows, teacher_rows
from forecast.errors import AnswerParseError

OFFICIAL = official_rows()
TEACHER = teacher_rows()


def test_reads_all_180_official_gpt4_answers():
    parsed = [parse_answer(r.answer or "") for r in OFFICIAL]
    assert len(parsed) == 180
    assert all(p.positive and p.concerns and p.analysis for p in parsed)
    # Two official answers state the move in prose instead of a "Prediction:" line.
    assert sum(p.prediction_source == "line" for p in parsed) == 178
    # The official answers were written knowing the realized week: each matches its label.
    assert [p.prediction for p in parsed] == [r.label for r in OFFICIAL]


def test_reads_all_teacher_answers_with_their_label():
    parsed = [parse_answer(r.answer or "", label=r.label) for r in TEACHER]
    assert len(parsed) == len(TEACHER) == 84
    assert all(p.prediction == r.label for p, r in zip(parsed, TEACHER, strict=True))
    assert all(p.positive and p.concerns and p.analysis for p in parsed)


ANSWER = """[Positive Developments]:
1. Strong quarter.
2. New product.

[Potential Concerns]:
1. Debt.

[Prediction & Analysis]:
Prediction: Down by more than 5%
Analysis: Weak guidance outweighs the rest."""


def test_deepseek_think_preamble_and_eos_are_tolerated():
    text = "<think>\nThe stock fell... let me weigh it.\n</think>\n\n" + ANSWER + "<｜end▁of▁sentence｜>"
    p = parse_answer(text)
    assert p.prediction is Bin.D5_PLUS
    assert p.positive_items == ["Strong quarter.", "New product."]
    assert p.concern_items == ["Debt."]
    assert p.analysis == "Weak guidance outweighs the rest."


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("[positive developments]\n1. a\n[potential concerns]\n1. b\n[prediction and analysis]\nprediction: up by 2-3%\nanalysis: c", Bin.U3),
        ("[Positive Developments]:1. a [Potential Concerns]: 1. b [Prediction & Analysis]:\n  PREDICTION :  Up by 0-1%.\nAnalysis: c", Bin.U1),
        ("[Positive Developments]:\n1. a\n\n[Potential Concerns]:\n1. b\n\n[Prediction & Analysis]\nPrediction: Down by 4-5%\nAnalysis: c", Bin.D5),
    ],
)
def test_case_and_spacing_variants(variant, expected):
    assert parse_answer(variant).prediction is expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "The stock will go up.",
        ANSWER.replace("Down by more than 5%", "Down by 3-7%"),
        ANSWER.replace("Prediction: Down by more than 5%\nAnalysis: Weak guidance outweighs the rest.", "It is hard to say."),
        ANSWER.replace("[Potential Concerns]:", ""),
    ],
)
def test_unreadable_answers_raise_a_typed_error(bad):
    with pytest.raises(AnswerParseError):
        parse_answer(bad)


# -- cut-off answers: the probe rule shared by training's evaluation and the service ---------


def test_bin_phrases_are_the_twelve_bins_as_answers_write_them() -> None:
    from forecast.answer import bin_phrases
    from forecast.bins import Bin, bin_of_phrase

    phrases = bin_phrases()
    assert len(phrases) == 12 and " Up by 0-1%" in phrases and " Down by more than 5%" in phrases
    assert [bin_of_phrase(p) for p in phrases] == list(Bin)


def test_read_partial_takes_the_probe_only_when_the_text_has_no_readable_bin() -> None:
    from forecast.answer import probe_text, read_partial
    from forecast.bins import Bin

    cut = "[Positive Developments]:\n1. Strong sales.\n\n[Potential Concerns]:\n1. Debt"
    assert read_partial(cut) is None
    assert read_partial(cut, " unclear") is None
    probed = read_partial(cut, " Down by 3-4%")
    assert probed is not None and probed.prediction is Bin.D4 and probed.prediction_source == "probe"
    assert probed.positive == "1. Strong sales." and probed.concerns == "1. Debt"
    assert probe_text(cut).endswith("1. Debt\n\n[Prediction & Analysis]:\nPrediction:")
    full = cut + "\n\n[Prediction & Analysis]:\nPrediction: Up by 1-2%\nAnalysis: fine."
    read = read_partial(full, " Down by 3-4%")  # a readable answer ignores the probe
    assert read is not None and read.prediction is Bin.U2 and read.prediction_source == "line"
