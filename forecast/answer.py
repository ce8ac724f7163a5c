"""Parser for FinGPT-Forecaster answers.

An answer has three sections, ``[Positive Developments]``, ``[Potential Concerns]`` and
``[Prediction & Analysis]``, the last with ``Prediction: Up by 2-3%`` then ``Analysis: ...``.
The parser tolerates a DeepSeek-R1 ``<think>…</think>`` preamble (opened by the prompt or not), case and spacing variants,
``and`` for ``&``, and a missing colon after a section header. It returns a typed
:class:`ParsedAnswer` or raises :class:`~forecast.errors.AnswerParseError`; it never guesses.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from forecast.bins import Bin, bin_of_phrase
from forecast.errors import AnswerParseError
from forecast.templates import SPECS

# DeepSeek-R1's generation prompt already opens the block (``<｜Assistant｜><think>\n``), so
# the generated text may start inside it: the opening tag is optional, the closing one is not.
_THINK = re.compile(r"^\s*(?:<think>)?.*?</think>\s*", re.DOTALL | re.IGNORECASE)
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
_EOS = tuple(dict.fromkeys(spec.eos for spec in SPECS.values()))  # every chat format's end of turn


class ParsedAnswer(BaseModel):
    model_config = ConfigDict(frozen=True)

    positive: str
    concerns: str
    prediction: Bin
    prediction_text: str
    analysis: str
    # "line": a ``Prediction:`` line; "prose": a directional percent range in the analysis;
    # "label": a teacher answer that states no readable bin, given its prompt's label;
    # "probe": a cut-off answer whose bin the model chose after an appended Prediction header.
    prediction_source: Literal["line", "prose", "label", "probe"] = "line"

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
    """Drop a leading ``<think>…</think>`` block (its opening tag may be the prompt's) and
    trailing end-of-turn markers."""
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


# -- cut-off answers ----------------------------------------------------------------------
#
# A generation that ends before its ``Prediction:`` line (a small token budget, or a model that
# rambles) does not parse. Its own text, cut before any partial prediction section, plus
# ``PROBE_HEADER`` is the context in which the model is asked for one of the twelve bin
# phrases (constrained decoding); the bin it picks is still the model's own and is reported as
# ``prediction_source="probe"``. Training's evaluation and the service use this one rule.

PROBE_HEADER = "\n\n[Prediction & Analysis]:\nPrediction:"
PROBE_MAX_TOKENS = 16  # the probe's own budget: the longest bin phrase fits well inside it
_HEADERS = {
    "positive": r"\[\s*positive\s+developments?\s*\]\s*:?",
    "concerns": r"\[\s*potential\s+concerns?\s*\]\s*:?",
    "pa": r"\[\s*prediction\s*(?:&|and)\s*analysis\s*\]\s*:?",
}
_PREDICTION_LINE = re.compile(
    r"prediction\W*:\s*(?P<pred>[^\n]*)(?:\n\W*analysis\W*:\s*)?(?P<rest>.*)", re.I | re.S
)


def sections(text: str) -> dict[str, str]:
    """The three sections found in ``text`` (missing ones empty), by header position."""
    body = strip_reasoning(text)
    found = []
    for name, pattern in _HEADERS.items():
        m = re.search(pattern, body, re.I)
        if m is not None:
            found.append((m.start(), m.end(), name))
    found.sort()
    out = dict.fromkeys(_HEADERS, "")
    for k, (_, end, name) in enumerate(found):
        stop = found[k + 1][0] if k + 1 < len(found) else len(body)
        out[name] = body[end:stop].strip()
    return out


def probe_text(text: str) -> str:
    """The generated text cut before any partial prediction section, plus the header."""
    body = text
    m = re.search(_HEADERS["pa"], body, re.I)
    if m is not None:
        body = body[: m.start()]
    return body.rstrip() + PROBE_HEADER


def bin_phrase(b: Bin) -> str:
    """`` Up by 2-3%``: a bin as the answer writes it after ``Prediction:``."""
    return " " + _capital(b.phrase())


def bin_phrases() -> list[str]:
    """The twelve valid continuations of ``PROBE_HEADER``, in :class:`Bin` order."""
    return [bin_phrase(b) for b in Bin]


def partial_fields(text: str) -> tuple[str, str, str, str]:
    """``(positive, concerns, prediction line, analysis)`` of a possibly cut-off answer, each
    empty when missing."""
    parts = sections(text)
    m = _PREDICTION_LINE.search(parts["pa"])
    if m is None:
        return parts["positive"], parts["concerns"], "", parts["pa"]
    return parts["positive"], parts["concerns"], m["pred"].strip(), m["rest"].strip()


def read_partial(text: str, probe: str | None = None) -> ParsedAnswer | None:
    """A generated answer that :func:`parse_answer` may reject: its sections as found, and the
    bin from its own ``Prediction:`` line if readable, else from ``probe`` (the continuation
    after :func:`probe_text`), else ``None``."""
    try:
        return parse_answer(text)
    except AnswerParseError:
        pass
    positive, concerns, pred_text, analysis = partial_fields(text)
    first_line = (probe or "").split("\n", 1)[0]
    for candidate, source in ((pred_text, "line"), (first_line, "probe")):
        try:
            prediction = bin_of_phrase(candidate)
        except ValueError:
            continue
        return ParsedAnswer(
            positive=positive, concerns=concerns, prediction=prediction,
            prediction_text=candidate.strip(), analysis=analysis,
            prediction_source="line" if source == "line" else "probe",
        )
    return None
