"""The FinGPT answer expression the engine decodes under (forecast/answer_format.py): what it
admits, its bounds, and the fitting that makes every admitted answer fit a token budget."""

from __future__ import annotations

import re

import pytest

from forecast.answer import bin_phrases, parse_answer
from forecast.answer_format import (
    LIMITS,
    MIN_ITEM_CHARS,
    THINK_CLOSE,
    AnswerLimits,
    answer_regex,
    chars_before_prediction,
    max_answer_chars,
    min_answer_tokens,
)
from forecast.bins import Bin
from forecast.dataset import official_rows
from forecast.templates import ChatFormat

FORMATS = [ChatFormat.LLAMA3, ChatFormat.DEEPSEEK_R1]


def longest(fmt: ChatFormat, limits: AnswerLimits, phrase: str) -> str:
    """The longest answer the bounds admit, with ``phrase`` as its prediction."""
    items = "".join(f"{n}. " + "x" * limits.item_chars + "\n" for n in range(1, limits.max_items + 1))
    text = (
        f"[Positive Developments]:\n{items}\n[Potential Concerns]:\n{items}\n"
        f"[Prediction & Analysis]:\nPrediction: {phrase}\nAnalysis: " + "a" * limits.analysis_chars
    )
    if fmt is ChatFormat.DEEPSEEK_R1:
        text = "t" * limits.think_chars + THINK_CLOSE + text
    return text


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_longest_admitted_answer_is_the_bound_and_parses_by_its_line(fmt: ChatFormat) -> None:
    expression = re.compile(answer_regex(fmt))
    for b in Bin:
        phrase = b.phrase()[0].upper() + b.phrase()[1:]
        text = longest(fmt, LIMITS, phrase)
        assert expression.fullmatch(text)
        parsed = parse_answer(text)
        assert (parsed.prediction, parsed.prediction_source) == (b, "line")
    longest_phrase = max((p.strip() for p in bin_phrases()), key=len)
    text = longest(fmt, LIMITS, longest_phrase)
    assert len(text.encode()) == max_answer_chars(fmt) == len(text)
    assert text.index(longest_phrase) + len(longest_phrase) == chars_before_prediction(fmt)
    assert not expression.fullmatch(text + "a")  # one more analysis character: refused


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "bad",
    [
        "[Potential Concerns]:\n1. x\n",  # a section missing
        "1. an item [Potential Concerns]: that opens a header\n",  # no "[" inside an item
        "1. caf\u00e9 au lait\n",  # ASCII only: one character, one byte, at most one token
        "1. " + "x" * 321 + "\n",  # an item over its bound
        "".join(f"{n}. x\n" for n in range(1, 7)),  # six items
        "2. numbered out of order\n",
        "1. an item that ends the turn <|eot_id|> as text\n",  # a stop string cannot end it early
    ],
)
def test_malformed_positive_sections_are_refused(fmt: ChatFormat, bad: str) -> None:
    good = longest(fmt, AnswerLimits(max_items=1, item_chars=1, analysis_chars=5, think_chars=0), "Up by 1-2%")
    assert re.fullmatch(answer_regex(fmt), good)
    broken = good.replace("[Positive Developments]:\n1. x\n", "[Positive Developments]:\n" + bad, 1)
    assert broken != good
    assert not re.fullmatch(answer_regex(fmt), broken)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_prediction_outside_the_twelve_bins_is_refused(fmt: ChatFormat) -> None:
    good = longest(fmt, LIMITS, "Up by 1-2%")
    for bad in ("Up by 1-3%", "up by 1-2%", "Flat", "Up by 1-2%."):
        assert not re.fullmatch(answer_regex(fmt), good.replace("Up by 1-2%", bad, 1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_fitted_bounds_keep_every_answer_within_the_budget(fmt: ChatFormat) -> None:
    floor = min_answer_tokens(fmt)
    previous = 0
    for budget in range(floor, 6000, 23):
        limits = LIMITS.fitting(budget, fmt)
        size = max_answer_chars(fmt, limits)
        assert size <= budget
        assert limits.max_items <= LIMITS.max_items and limits.item_chars <= LIMITS.item_chars
        assert limits.analysis_chars <= LIMITS.analysis_chars
        assert size >= previous  # a larger budget never shrinks the answer
        previous = size
    assert LIMITS.fitting(8192, fmt) == LIMITS  # the defaults fit a large budget unchanged
    assert max_answer_chars(fmt, LIMITS.fitting(floor - 1, fmt)) == floor  # below: the smallest


def test_the_expression_describes_the_real_answers() -> None:
    """The official GPT-4 answers the expression admits (ASCII, items and analysis within the
    bounds) are read by their Prediction line, as the parser reads the raw answers."""
    expression = re.compile(answer_regex(ChatFormat.LLAMA3))
    rows = official_rows()
    admitted = [r for r in rows if expression.fullmatch(r.answer)]
    assert len(admitted) >= len(rows) // 2
    for r in admitted:
        assert parse_answer(r.answer).prediction_source == "line"


@pytest.mark.parametrize("budget", [1024, 1536, 2048])
@pytest.mark.parametrize("fmt", [ChatFormat.LLAMA3, ChatFormat.DEEPSEEK_R1])
def test_fitted_items_stay_readable(fmt: ChatFormat, budget: int) -> None:
    """At the demo's and the service's budgets the bounds drop items rather than cut each one
    below the shortest GPT-4 items (~100 characters): a person reads whole clauses."""
    limits = LIMITS.fitting(budget, fmt)
    assert limits.item_chars >= MIN_ITEM_CHARS
    assert max_answer_chars(fmt, limits) <= budget
