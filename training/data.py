"""Training data: FinGPT rows → PREDICT prompts with normalized answers → masked token ids.

FinGPT-Forecaster asked its teacher to *explain* a known label ("let's assume your prediction
is down by 3-4%") and then trained on the *predict* form of the same prompt, so the model
learns to predict, not to justify a bin it was handed. :func:`to_example` does that swap and
rewrites the answer's last section as ``Prediction: Down by 3-4%`` / ``Analysis: ...`` from
the known label. :func:`encode` renders an example in a base's chat format and tokenizes it
with every prompt token masked to -100; a prompt too long for ``max_length`` loses news items,
oldest week first, and the answer is never cut.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from forecast.answer import parse_answer
from forecast.bins import Bin
from forecast.dataset import Row, official_rows, teacher_rows
from forecast.prompt import ForecastPrompt, Instruction, WeekBlock
from forecast.templates import SPECS, ChatFormat, answer_target, render_chat
from training.config import DataSettings
from training.teacher import BundledTeacher, Teacher, answer_rows

IGNORE_INDEX = -100  # the label value the cross-entropy loss skips


class Tokenizer(Protocol):
    """The slice of a Hugging Face tokenizer this module uses."""

    def __call__(self, text: str, *, add_special_tokens: bool = ...) -> Any: ...


@dataclass(frozen=True)
class Example:
    """One supervised pair: a PREDICT prompt and the answer to learn."""

    key: str
    prompt: ForecastPrompt
    answer: str  # normalized FinGPT answer, without chat markup
    label: Bin
    last_week: Bin  # bin of the week before as_of (the momentum baseline)
    source: str


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on every prompt token
    prompt_tokens: int
    dropped_news: int


def to_predict(prompt: ForecastPrompt) -> ForecastPrompt:
    """The PREDICT form of a (teacher) prompt, with the system prompt, as served."""
    return prompt.model_copy(
        update={"instruction": Instruction.PREDICT, "assumed_bin": None, "with_system": True}
    )


def normalize_answer(text: str, label: Bin) -> str:
    """The answer with its prediction line rebuilt from ``label`` (teacher answers often state
    the bin only in prose, or not at all)."""
    parsed = parse_answer(text, label)
    phrase = label.phrase()
    return (
        f"[Positive Developments]:\n{parsed.positive}\n\n"
        f"[Potential Concerns]:\n{parsed.concerns}\n\n"
        f"[Prediction & Analysis]:\nPrediction: {phrase[0].upper()}{phrase[1:]}\n"
        f"Analysis: {parsed.analysis}"
    )


def to_example(row: Row) -> Example:
    if row.label is None or row.answer is None:
        raise ValueError(f"row {row.key} has no label or no answer to learn")
    return Example(
        key=row.key, prompt=to_predict(row.prompt), answer=normalize_answer(row.answer, row.label),
        label=row.label, last_week=row.last_week, source=row.source,
    )


def bundled_examples() -> list[Example]:
    """Teacher rows (2023) and official rows (2024-02-25 .. 2024-04-07), oldest first."""
    rows = [*teacher_rows(), *official_rows()]
    return sorted((to_example(r) for r in rows), key=lambda e: (e.prompt.as_of, e.key))


def split_examples(
    examples: Sequence[Example], cutoff: dt.date
) -> tuple[list[Example], list[Example]]:
    """Examples whose target week ends by ``cutoff`` train; those from ``cutoff`` on are held
    back. Same rule as :func:`forecast.dataset.split_by_date`."""
    train = [e for e in examples if e.prompt.target_end <= cutoff]
    held = [e for e in examples if e.prompt.as_of >= cutoff]
    return train, held


def spread(examples: Sequence[Example], n: int | None) -> list[Example]:
    """``n`` examples spread evenly over the (date-sorted) list, for small deterministic slices."""
    if n is None or n >= len(examples):
        return list(examples)
    step = len(examples) / n
    return [examples[int(i * step)] for i in range(n)]


def drop_oldest_news(prompt: ForecastPrompt) -> ForecastPrompt | None:
    """The prompt less its oldest news item (oldest week first); None when no news is left."""
    for i, week in enumerate(prompt.weeks):
        if week.news:
            shorter: WeekBlock = week.model_copy(update={"news": week.news[1:]})
            weeks = (*prompt.weeks[:i], shorter, *prompt.weeks[i + 1 :])
            return prompt.model_copy(update={"weeks": weeks})
    return None


def _ids(tokenizer: Tokenizer, text: str, fmt: ChatFormat) -> list[int]:
    # A format that writes its BOS into the text must not get a second one from the tokenizer.
    special = not SPECS[fmt].bos
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def fit_prompt(
    prompt: ForecastPrompt, tokenizer: Tokenizer, fmt: ChatFormat, budget: int
) -> tuple[list[int], int] | None:
    """Token ids of the rendered prompt within ``budget`` tokens, and how many news items were
    dropped to get there; None when it does not fit even without news."""
    ids = _ids(tokenizer, render_chat(prompt, fmt), fmt)
    if len(ids) <= budget:
        return ids, 0
    # If even the news-free prompt is too long, say so at once rather than drop item by item.
    bare = prompt.model_copy(update={"weeks": tuple(w.model_copy(update={"news": ()}) for w in prompt.weeks)})
    if len(_ids(tokenizer, render_chat(bare, fmt), fmt)) > budget:
        return None
    dropped = 1
    current: ForecastPrompt | None = drop_oldest_news(prompt)
    while current is not None:
        ids = _ids(tokenizer, render_chat(current, fmt), fmt)
        if len(ids) <= budget:
            return ids, dropped
        current = drop_oldest_news(current)
        dropped += 1
    return None


def encode(
    example: Example, tokenizer: Tokenizer, fmt: ChatFormat, max_length: int
) -> Encoded | None:
    """Prompt + answer ids with the prompt masked; None if the answer leaves no room for the
    prompt (the example is skipped, never truncated)."""
    # Prompt and answer are tokenized apart: generation starts from the prompt's ids alone.
    answer_ids = list(tokenizer(answer_target(example.answer, fmt), add_special_tokens=False)["input_ids"])
    fitted = fit_prompt(example.prompt, tokenizer, fmt, max_length - len(answer_ids))
    if fitted is None:
        return None
    prompt_ids, dropped = fitted
    return Encoded(
        input_ids=prompt_ids + answer_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + answer_ids,
        prompt_tokens=len(prompt_ids),
        dropped_news=dropped,
    )


@dataclass(frozen=True)
class EncodedSet:
    examples: list[Example]  # the ones that fit, in order
    encoded: list[Encoded]
    skipped: list[str]  # keys of examples whose answer left no room for a prompt

    def as_records(self) -> list[dict[str, list[int]]]:
        return [
            {"input_ids": e.input_ids, "labels": e.labels, "attention_mask": [1] * len(e.input_ids)}
            for e in self.encoded
        ]


def encode_all(
    examples: Sequence[Example], tokenizer: Tokenizer, fmt: ChatFormat, max_length: int
) -> EncodedSet:
    kept, encoded, skipped = [], [], []
    for ex in examples:
        enc = encode(ex, tokenizer, fmt, max_length)
        if enc is None:
            skipped.append(ex.key)
            continue
        kept.append(ex)
        encoded.append(enc)
    return EncodedSet(kept, encoded, skipped)


def pad_batch(features: list[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch: pad ids, mask 0, labels IGNORE_INDEX."""
    import torch

    width = max(len(f["input_ids"]) for f in features)

    def padded(key: str, fill: int) -> Any:
        return torch.tensor([f[key] + [fill] * (width - len(f[key])) for f in features])

    return {
        "input_ids": padded("input_ids", pad_id),
        "attention_mask": padded("attention_mask", 0),
        "labels": padded("labels", IGNORE_INDEX),
    }



def market_examples(
    days: Sequence[dt.date], tickers: Sequence[str] | None, weeks: int, with_indicators: bool,
    teacher: Teacher,
) -> tuple[list[Example], list[str]]:
    """Weeks built from the market-data snapshot, answered by ``teacher``; the keys it could
    not answer."""
    from forecast.dataset import build_rows
    from forecast.providers.snapshot import SnapshotMarketData
    from forecast.windows import WindowConfig

    config = WindowConfig(weeks=weeks, with_indicators=with_indicators)
    rows = build_rows(SnapshotMarketData(), days, config, tickers)
    answered, missing = answer_rows(rows, teacher)
    return [to_example(r) for r in answered], missing


@dataclass(frozen=True)
class Split:
    train: EncodedSet
    held: EncodedSet
    unanswered: list[str]  # market weeks the teacher had no answer for

    def window(self) -> dict[str, str | int]:
        """The data window of the adapter manifest."""
        def dates(examples: list[Example]) -> tuple[str, str]:
            return (
                min(e.prompt.as_of for e in examples).isoformat(),
                max(e.prompt.target_end for e in examples).isoformat(),
            )

        train_start, train_end = dates(self.train.examples)
        eval_start, eval_end = dates(self.held.examples)
        weeks = max(len(e.prompt.weeks) for e in [*self.train.examples, *self.held.examples])
        return {
            "train_start": train_start, "train_end": train_end,
            "eval_start": eval_start, "eval_end": eval_end, "weeks": weeks,
            "train_rows": len(self.train.examples), "eval_rows": len(self.held.examples),
        }


def prepare_split(
    settings: DataSettings, tokenizer: Tokenizer, fmt: ChatFormat, teacher: Teacher | None = None
) -> Split:
    """Bundled (and market-built) examples, split at the cutoff, encoded, then sliced.

    Slices are taken among the examples that fit ``max_length``, spread over the dates, so a
    small slice still spans the whole window deterministically.
    """
    examples = bundled_examples()
    unanswered: list[str] = []
    if settings.market_days:
        extra, unanswered = market_examples(
            settings.market_days, settings.market_tickers, settings.weeks,
            settings.with_indicators, teacher or BundledTeacher(),
        )
        known = {e.key for e in examples}
        examples = sorted(
            [*examples, *(e for e in extra if e.key not in known)],
            key=lambda e: (e.prompt.as_of, e.key),
        )
    train, held = split_examples(examples, settings.cutoff)
    split = Split(
        train=_slice(encode_all(train, tokenizer, fmt, settings.max_length), settings.train_rows),
        held=_slice(encode_all(held, tokenizer, fmt, settings.max_length), settings.eval_rows),
        unanswered=unanswered,
    )
    if not split.train.examples or not split.held.examples:
        raise ValueError(
            f"empty split at cutoff {settings.cutoff} and max_length {settings.max_length}: "
            f"{len(split.train.examples)} train / {len(split.held.examples)} held-back rows fit"
        )
    return split


def _slice(encoded: EncodedSet, n: int | None) -> EncodedSet:
    chosen = set(id(e) for e in spread(encoded.examples, n))
    pairs = [(x, e) for x, e in zip(encoded.examples, encoded.encoded, strict=True) if id(x) in chosen]
    return EncodedSet([x for x, _ in pairs], [e for _, e in pairs], encoded.skipped)
