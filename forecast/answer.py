"""Parser for FinGPT-Forecaster answers.

An answer has three sections, ``[Positive Developments]``, ``[Potential Concerns]`` and
``[Prediction & Analysis]``, the last with ``Prediction: Up by 2-3%`` then ``Analysis: ...``.
The parser tolerates a DeepSeek-R1 ``<think>…</think>`` preamble, case and spacing variants,
``and`` for ``&``, and a missing colon after a section header. It returns a typed
:class:`ParsedAnswer` or raises :class:`~forecast.errors.AnswerParseError`; it never guesses.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from forecast.bins import Bin, bin_of_phrase
from forecast.errors import AnswerParseError

_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL | re.IGNORECASE)
_SECTIONS = re.compile(
    r"\[\s*positive\s+developments?\s*\]\s*:?\s*(?P<pos>.*?)"
    r"\[\s*potential\s+concerns?\s*\]\s*:?\s*(?P<neg>.*?)"
    r"\[\s*prediction\s*(?:&|and)\s*analysis\s*\]\s*:?\s*(?P<pa>.*)",
    re.DOTALL | re.IGNORECASE,
)
_PREDICTION = re.compile(
    r"^\W*prediction\W*:\s*(?P<pred>[^\n]*?)\s*(?:\n|$)\s*(?:\W*analysis\W*:\s*)?(?P<analysis>.*)",
    re.DOTALL | re.IGNORECASE,
)
_RANGE = r"(?:(?P<low>\d+)\s*(?:-|–|to)\s*(?P<high>\d+)\s*%|more\s+than\s+(?P<more>\d+)\s*%)"
_UP_WORDS = (
    r"up|upward|upwards|increase|increasing|rise|rising|gain|gains|uptick|growth|climb|higher|"
    r"positive|rebound|recover|recovery|appreciation"
)
_DOWN_WORDS = (
    r"down|downward|downwards|decrease|decreasing|decline|declining|drop|fall|falling|downtick|"
    r"dip|lower|negative|loss|downturn|depreciation"
)
_PROSE = re.compile(
    rf"\b(?P<dir>{_UP_WORDS}|{_DOWN_WORDS})\b[^.%\d]{{0,80}}?(?:by\s+|of\s+)?(?:around\s+|about\s+|approximately\s+)?{_RANGE}",
    re.IGNORECASE,
)
_PROSE_AFTER = re.compile(
    rf"{_RANGE}\s+(?P<dir>{_UP_WORDS}|{_DOWN_WORDS})\b",
    re.IGNORECASE,
)
_ITEM = re.compile(r"^\s*\d+[.)]\s*", re.MULTILINE)
_EOS = ("</s>", "<|eot_id|>", "<｜end▁of▁sentence｜>")


class ParsedAnswer(BaseModel):
    model_config = ConfigDict(frozen=True)

    positive: str
    concerns: str
    prediction: Bin
    prediction_text: str
    analysis: str
    # "line": a ``Prediction:`` line; "prose": a directional percent range in the analysis;
    # "label": a teacher answer that states no readable bin, given its prompt's label.
    prediction_source: Literal["line", "prose", "label"] = "line"

    @property
    def positive_items(self) -> list[str]:
        return _items(self.positive)

    @property
    def concern_items(self) -> list[str]:
        return _items(self.concerns)

    @property
    def prediction_and_analysis(self) -> str:
        return f"Prediction: {self.prediction_text}\nAnalysis: {self.analysis}"


def _items(section: str) -> list[str]:
    parts = [p.strip() for p in _ITEM.split(section)]
    return [p for p in parts if p]


def strip_reasoning(text: str) -> str:
    """Drop a leading ``<think>…</think>`` block and trailing end-of-turn markers."""
    text = _THINK.sub("", text, count=1)
    for eos in _EOS:
        text = text.replace(eos, "")
    return text.strip()


def parse_answer(text: str, label: Bin | None = None) -> ParsedAnswer:
    """Parse a model or teacher answer.

    ``label`` is for teacher answers only, whose prompt stated the bin to explain: it is used
    (and reported as ``prediction_source="label"``) when the answer has no ``Prediction:``
    line, since free prose is then the only other place the bin could be read.
    """
    body = strip_reasoning(text)
    sections = _SECTIONS.search(body)
    if sections is None:
        raise AnswerParseError("answer lacks the three FinGPT sections")
    pa_text = sections["pa"].strip()
    pa = _PREDICTION.match(pa_text)
    if pa is None:
        pos, neg = sections["pos"].strip(), sections["neg"].strip()
        if label is not None:
            return ParsedAnswer(
                positive=pos, concerns=neg, prediction=label, prediction_text=_capital(label.phrase()),
                analysis=pa_text, prediction_source="label",
            )
        return _parse_prose(pos, neg, pa_text)
    pred_text = pa["pred"].strip().rstrip(".")
    try:
        prediction = bin_of_phrase(pred_text)
    except ValueError as exc:
        raise AnswerParseError(f"unreadable prediction {pred_text!r}") from exc
    return ParsedAnswer(
        positive=sections["pos"].strip(),
        concerns=sections["neg"].strip(),
        prediction=prediction,
        prediction_text=pred_text,
        analysis=pa["analysis"].strip(),
    )


def _capital(phrase: str) -> str:
    return phrase[0].upper() + phrase[1:]


def _end(m: re.Match[str]) -> int:
    return m.end()


def _parse_prose(positive: str, concerns: str, analysis: str) -> ParsedAnswer:
    """An analysis with no ``Prediction:`` line: the last directional percent range in it."""
    matches = sorted([*_PROSE.finditer(analysis), *_PROSE_AFTER.finditer(analysis)], key=_end)
    if not matches:
        raise AnswerParseError("no 'Prediction:' line and no predicted move in the analysis")
    m = matches[-1]
    up = re.fullmatch(_UP_WORDS, m["dir"], re.IGNORECASE) is not None
    direction = "up" if up else "down"
    phrase = (
        f"{direction} by more than {m['more']}%"
        if m["more"] is not None
        else f"{direction} by {m['low']}-{m['high']}%"
    )
    try:
        prediction = bin_of_phrase(phrase)
    except ValueError as exc:
        raise AnswerParseError(f"unreadable prediction {m.group(0)!r}") from exc
    return ParsedAnswer(
        positive=positive,
        concerns=concerns,
        prediction=prediction,
        prediction_text=_capital(phrase),
        analysis=analysis,
        prediction_source="prose",
    )
