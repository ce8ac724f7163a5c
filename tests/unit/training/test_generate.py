"""Reading generated answers: full parses, cut-off answers with a probed bin, unreadable ones."""

from __future__ import annotations

from forecast.answer import PROBE_HEADER, probe_text, sections
from forecast.bins import Bin
from training.generate import FALLBACK_BIN, read_answer

FULL = (
    "[Positive Developments]:\n1. Strong sales.\n\n[Potential Concerns]:\n1. Debt.\n\n"
    "[Prediction & Analysis]:\nPrediction: Down by 1-2%\nAnalysis: Debt weighs on it."
)


def test_a_complete_answer_parses() -> None:
    read = read_answer(FULL + "<|eot_id|>")
    assert read.how == "parsed" and read.parsed.prediction is Bin.D2
    assert read.parsed.concerns == "1. Debt."


def test_a_cut_off_answer_takes_the_probed_bin_and_keeps_its_sections() -> None:
    cut = "[Positive Developments]:\n1. Strong sales.\n\n[Potential Conc"
    assert probe_text(cut).endswith("[Potential Conc" + PROBE_HEADER)
    read = read_answer(cut, probe=" Up by 2-3%\nAnalysis: more")
    assert read.how == "probed" and read.parsed.prediction is Bin.U3
    assert read.parsed.positive.startswith("1. Strong sales.")
    assert read.parsed.concerns == ""


def test_a_partial_prediction_section_is_cut_before_probing() -> None:
    text = FULL.replace("Prediction: Down by 1-2%", "Prediction: Down by")
    assert probe_text(text).endswith("1. Debt." + PROBE_HEADER)
    assert read_answer(text, probe=" Down by 1-2%").parsed.prediction is Bin.D2


def test_an_unreadable_prediction_falls_back_and_is_counted() -> None:
    read = read_answer("The stock is interesting.", probe=" unclear")
    assert read.how == "unreadable" and read.parsed.prediction is FALLBACK_BIN


def test_sections_tolerate_a_think_block_and_missing_headers() -> None:
    parts = sections("<think>\n\n</think>\n\n[Positive Developments]:\n1. a\n\n[Prediction and Analysis]: b")
    assert parts == {"positive": "1. a", "concerns": "", "pa": "b"}
