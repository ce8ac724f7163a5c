"""The answer parser reads every official and teacher answer, and fails loudly otherwise."""

import pytest

from forecast.answer import (
    PROBE_HEADER,
    parse_answer,
    partial_fields,
    probe_text,
    read_partial,
    sections,
    strip_reasoning,
)
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


# -- cases mutation testing showed unguarded (tests/MUTATION.md) ---------------------------

SECTIONS_ONLY = "[Positive Developments]:\n1. Strong quarter.\n\n[Potential Concerns]:\n1. Debt.\n\n"


@pytest.mark.parametrize(("analysis", "expected", "text"), [
    ("We expect the shares to RISE by more than 5% on the launch.", Bin.U5_PLUS, "Up by more than 5%"),
    ("Guidance points to a decline of 2-3% next week.", Bin.D3, "Down by 2-3%"),
    ("A 3-4% gain is possible early. We expect a drop of 1-2% by Friday.", Bin.D2, "Down by 1-2%"),
    ("A drop of 1-2% is possible early. We expect a 4-5% rebound.", Bin.U5, "Up by 4-5%"),
])
def test_prose_reads_the_direction_and_the_last_move(analysis: str, expected: Bin, text: str) -> None:
    parsed = parse_answer(SECTIONS_ONLY + "[Prediction & Analysis]:\n" + analysis)
    assert (parsed.prediction, parsed.prediction_text, parsed.prediction_source) == (expected, text, "prose")
    assert parsed.analysis == analysis and parsed.concerns == "1. Debt."


def test_a_teacher_answer_without_a_line_takes_its_label_and_says_so() -> None:
    parsed = parse_answer(SECTIONS_ONLY + "[Prediction & Analysis]:\nThe outlook is mixed.", label=Bin.U2)
    assert (parsed.prediction, parsed.prediction_text, parsed.prediction_source) == (
        Bin.U2, "Up by 1-2%", "label")


def test_the_prediction_text_loses_its_full_stop() -> None:
    parsed = parse_answer(ANSWER.replace("more than 5%", "more than 5%."))
    assert parsed.prediction_text == "Down by more than 5%"


def test_reasoning_is_dropped_without_a_trace() -> None:
    assert strip_reasoning("<think>\nweigh the news\n</think>\n\nHello") == "Hello"
    assert strip_reasoning("weigh the news</think>Hello") == "Hello"  # opened by the prompt


def test_sections_are_cut_at_the_next_header_and_missing_ones_are_empty() -> None:
    assert sections(ANSWER) == {
        "positive": "1. Strong quarter.\n2. New product.", "concerns": "1. Debt.",
        "pa": "Prediction: Down by more than 5%\nAnalysis: Weak guidance outweighs the rest.",
    }
    assert sections("[Positive Developments]:\n1. Strong quarter.") == {
        "positive": "1. Strong quarter.", "concerns": "", "pa": ""}


def test_the_probe_keeps_the_answer_up_to_its_prediction_section() -> None:
    cut = "\n" + SECTIONS_ONLY + "[Prediction & Analysis]:\nPredic"
    assert probe_text(cut) == "\n" + SECTIONS_ONLY.rstrip() + PROBE_HEADER


def test_partial_fields_of_a_cut_off_answer() -> None:
    with_line = SECTIONS_ONLY + "[Prediction & Analysis]:\nPrediction: Up by\nAnalysis: Because"
    assert partial_fields(with_line) == ("1. Strong quarter.", "1. Debt.", "Up by", "Because")
    without = SECTIONS_ONLY + "[Prediction & Analysis]:\nThe outl"
    assert partial_fields(without) == ("1. Strong quarter.", "1. Debt.", "", "The outl")


def test_read_partial_says_where_the_bin_came_from() -> None:
    own_line = SECTIONS_ONLY + "[Prediction & Analysis]:\nPrediction: Up by 2-3%\nAnalysis: unfinished ["
    from_line = read_partial(own_line.replace("[Positive Developments]", "[Positive"))
    assert from_line is not None and from_line.prediction_source == "line"
    assert from_line.prediction == Bin.U3 and from_line.prediction_text == "Up by 2-3%"
    cut = SECTIONS_ONLY + "[Prediction & Analysis]:\nPredic"
    probed = read_partial(cut, probe=" Down by 1-2%\nAnalysis: Up by 4-5%\nmore")
    assert probed is not None and probed.prediction_source == "probe"
    assert probed.prediction == Bin.D2 and probed.prediction_text == "Down by 1-2%"
    assert read_partial(cut, probe=None) is None
