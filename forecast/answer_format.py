"""The FinGPT answer format as a regular expression the engine decodes under.

Generated under this expression (vLLM structured output), every answer has the three section
headers in order, one to five numbered items of bounded length in each of the first two,
``Prediction: `` followed by exactly one of the twelve bin phrases, then ``Analysis: `` and a
bounded analysis, so :func:`forecast.answer.parse_answer` reads every answer by its own
``Prediction:`` line. For DeepSeek-R1 (whose prompt ends inside an opened ``<think>`` block)
a bounded reasoning text and ``</think>`` come first.

The default bounds come from the real GPT-4 answers the adapters learn from (264 rows: at most
5 items a section, items up to 420 characters, p95 248; analyses up to 1,751 characters).
Text is printable ASCII (plus newlines in the analysis and the reasoning), so a character is
one byte and every generated token at least one character: :func:`chars_before_prediction`
is then a bound in tokens too, and :meth:`AnswerLimits.fitting` shrinks the bounds until a
whole answer fits a token budget: no answer is cut short. Items and the analysis exclude ``[`` so no text can
open a section header of its own. No text admits ``<``: an end-of-turn *string* such as
``<|eot_id|>`` (a stop string of the engine) cannot be written as text in the middle of the
expression. A model whose tokenizer lacks the base's special tokens (the tiny stand-in) wrote
exactly that inside an item once, and the stop string ended the answer before its Prediction
line; the real bases' end of turn is a special token the expression never admits early.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, replace

from forecast.answer import bin_phrases
from forecast.templates import ChatFormat

ITEM_CLASS = r"[ -;=-Z\\\]-~]"  # printable ASCII but "[" and "<"
ANALYSIS_CLASS = r"[\n -;=-Z\\\]-~]"  # the same, and newlines
THINK_CLASS = r"[\n -;=-~]"  # printable ASCII and newlines but "<"
THINK_CLOSE = "</think>\n\n"
HEADERS = ("[Positive Developments]:\n", "\n[Potential Concerns]:\n", "\n[Prediction & Analysis]:\n")
MIN_ITEM_CHARS = 100  # the shortest 5 % of the GPT-4 items; fitting drops items before shortening them below it
# (reasoning share, analysis share, shortest item) tried in turn by AnswerLimits.fitting
SHARES = ((0.2, 0.25, MIN_ITEM_CHARS), (0.1, 0.15, MIN_ITEM_CHARS // 2), (0.05, 0.1, 16), (0.0, 0.0, 1))


@dataclass(frozen=True)
class AnswerLimits:
    max_items: int = 5  # numbered items per section (at least one)
    item_chars: int = 320  # characters of one item's text
    analysis_chars: int = 1800
    think_chars: int = 400  # DeepSeek-R1's reasoning before ``</think>``

    def __post_init__(self) -> None:
        if not 1 <= self.max_items <= 9:
            raise ValueError("max_items must be 1..9 (items are numbered with one digit)")
        if min(self.item_chars, self.analysis_chars) < 1 or self.think_chars < 0:
            raise ValueError("item and analysis bounds must be >= 1, the reasoning's >= 0")

    def fitting(self, max_tokens: int, fmt: ChatFormat) -> AnswerLimits:
        """These bounds, shrunk until a whole answer fits ``max_tokens``: the reasoning to at
        most a fifth of the budget and the analysis to a quarter, then fewer items, then
        shorter items (at least ``MIN_ITEM_CHARS``); on a budget too small for that, smaller
        shares for the reasoning and the analysis. The analysis then gets what is left (at
        most its own bound). Below :func:`min_answer_tokens` nothing fits: the smallest
        bounds are returned and the answer may be cut short."""
        for think_share, analysis_share, min_item in SHARES:
            think = self.think_chars
            if fmt is ChatFormat.DEEPSEEK_R1:
                think = min(think, int(max_tokens * think_share))
            analysis = max(1, min(self.analysis_chars, int(max_tokens * analysis_share)))
            for items in range(self.max_items if min_item > 1 else 1, 0, -1):
                bare = replace(self, max_items=items, think_chars=think, item_chars=1, analysis_chars=analysis)
                room = max_tokens - max_answer_chars(fmt, bare) + 2 * items
                item_chars = min(self.item_chars, room // (2 * items))
                if item_chars >= min_item:
                    limits = replace(bare, item_chars=item_chars)
                    left = max_tokens - chars_before_prediction(fmt, limits) - len("\nAnalysis: ")
                    return replace(limits, analysis_chars=min(self.analysis_chars, left))
        return SMALLEST


LIMITS = AnswerLimits()
SMALLEST = AnswerLimits(max_items=1, item_chars=1, analysis_chars=1, think_chars=0)


def _escape(text: str) -> str:
    """Escape only the regex metacharacters (``re.escape`` also escapes spaces and dashes,
    which some structured-output backends warn about)."""
    return "".join("\\" + c if c in r"\.^$*+?()[]{}|" else c for c in text)


def _items(limits: AnswerLimits) -> str:
    """``1. …\\n`` then optionally ``2. …\\n`` … up to ``max_items``, numbered in order."""
    text = rf"{ITEM_CLASS}{{1,{limits.item_chars}}}\n"
    tail = ""
    for n in range(limits.max_items, 1, -1):
        tail = rf"(?:{n}\. {text}{tail})?"
    return rf"1\. {text}{tail}"


def answer_regex(fmt: ChatFormat, limits: AnswerLimits = LIMITS) -> str:
    """The expression a whole generated answer (before the end-of-turn token) matches."""
    phrases = "|".join(_escape(p.strip()) for p in bin_phrases())
    items = _items(limits)
    pos, neg, pa = (_escape(h) for h in HEADERS)
    body = (
        rf"{pos}{items}{neg}{items}{pa}Prediction: (?:{phrases})\n"
        rf"Analysis: {ANALYSIS_CLASS}{{1,{limits.analysis_chars}}}"
    )
    if fmt is ChatFormat.DEEPSEEK_R1:
        return rf"{THINK_CLASS}{{0,{limits.think_chars}}}{_escape(THINK_CLOSE)}{body}"
    return body


def chars_before_prediction(fmt: ChatFormat, limits: AnswerLimits = LIMITS) -> int:
    """The most characters an answer under :func:`answer_regex` writes up to the end of its
    bin phrase (one byte each, and each generated token at least one: also a token bound)."""
    items = 2 * limits.max_items * (len("1. ") + limits.item_chars + 1)
    prediction = len("Prediction: ") + max(len(p.strip()) for p in bin_phrases())
    think = limits.think_chars + len(THINK_CLOSE) if fmt is ChatFormat.DEEPSEEK_R1 else 0
    return sum(len(h) for h in HEADERS) + items + prediction + think


def max_answer_chars(fmt: ChatFormat, limits: AnswerLimits = LIMITS) -> int:
    """The longest answer :func:`answer_regex` admits, in characters (= bytes)."""
    return chars_before_prediction(fmt, limits) + len("\nAnalysis: ") + limits.analysis_chars


def min_answer_tokens(fmt: ChatFormat) -> int:
    """The smallest token budget in which :meth:`AnswerLimits.fitting` guarantees a whole
    answer (one one-character item per section, a one-character analysis)."""
    return max_answer_chars(fmt, SMALLEST)


# vLLM refuses a regex whose compilation takes longer than VLLM_REGEX_COMPILATION_TIMEOUT_S
# (5 s by default: a guard against hostile patterns from clients). These expressions are the
# product's own, and on a loaded 2-core host the DeepSeek one (bounded reasoning, three
# sections) took longer than 5 s to compile: the request failed. They get more time.
REGEX_COMPILATION_TIMEOUT_S = "120"


def compile_room(environ: MutableMapping[str, str]) -> None:
    """Room for the answer expressions to compile in a vLLM engine started after this (an
    operator's own value of the variable is kept)."""
    environ.setdefault("VLLM_REGEX_COMPILATION_TIMEOUT_S", REGEX_COMPILATION_TIMEOUT_S)
