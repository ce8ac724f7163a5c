"""Training rows: PREDICT conversion, answer normalization, prompt mask, length cap, split."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from forecast.answer import parse_answer
from forecast.prompt import Instruction, render_user
from forecast.templates import ChatFormat, answer_target, render_chat
from training.config import DataSettings
from training.data import (
    IGNORE_INDEX,
    bundled_examples,
    drop_oldest_news,
    encode,
    prepare_split,
    split_examples,
    spread,
)

FORMATS = [ChatFormat.LLAMA3, ChatFormat.DEEPSEEK_R1]


@pytest.fixture(scope="module")
def examples() -> list[Any]:
    return bundled_examples()


def test_bundled_examples_are_predict_prompts_with_label_answers(examples: list[Any]) -> None:
    assert {e.source for e in examples} == {"teacher", "official"}
    for e in examples:
        assert e.prompt.instruction is Instruction.PREDICT
        assert e.prompt.assumed_bin is None and e.prompt.with_system
        text = render_user(e.prompt)
        assert "let's assume" not in text and "cryptocurrency" not in text
        parsed = parse_answer(e.answer)
        assert parsed.prediction_source == "line"
        assert parsed.prediction == e.label
        phrase = e.label.phrase()
        assert f"Prediction: {phrase[0].upper()}{phrase[1:]}\nAnalysis: " in e.answer


@pytest.mark.parametrize("fmt", FORMATS)
def test_prompt_is_masked_and_answer_learned_on_real_rows(
    examples: list[Any], tokenizer: Any, fmt: ChatFormat
) -> None:
    picked = [e for e in examples if e.source == "teacher"][:3] + [
        e for e in examples if e.source == "official"
    ][:3]
    for ex in picked:
        enc = encode(ex, tokenizer, fmt, max_length=4096)
        assert enc is not None and enc.dropped_news == 0
        n = enc.prompt_tokens
        assert len(enc.input_ids) == len(enc.labels) <= 4096
        assert enc.labels[:n] == [IGNORE_INDEX] * n
        assert enc.labels[n:] == enc.input_ids[n:]
        assert IGNORE_INDEX not in enc.labels[n:]
        assert tokenizer.decode(enc.input_ids[:n]) == render_chat(ex.prompt, fmt)
        assert tokenizer.decode(enc.labels[n:]) == answer_target(ex.answer, fmt)


def test_cap_drops_oldest_news_and_never_cuts_the_answer(examples: list[Any], tokenizer: Any) -> None:
    ex = max((e for e in examples if e.source == "official"), key=lambda e: len(render_user(e.prompt)))
    full = encode(ex, tokenizer, ChatFormat.LLAMA3, max_length=8192)
    assert full is not None
    capped = encode(ex, tokenizer, ChatFormat.LLAMA3, max_length=len(full.input_ids) - 200)
    assert capped is not None and capped.dropped_news > 0
    assert len(capped.input_ids) <= len(full.input_ids) - 200
    n = capped.prompt_tokens
    assert tokenizer.decode(capped.labels[n:]) == answer_target(ex.answer, ChatFormat.LLAMA3)
    # the oldest week with news loses its items first
    shorter = drop_oldest_news(ex.prompt)
    assert shorter is not None
    first = next(i for i, w in enumerate(ex.prompt.weeks) if w.news)
    assert shorter.weeks[first].news == ex.prompt.weeks[first].news[1:]
    # no room for the prompt at all: skipped, not truncated
    assert encode(ex, tokenizer, ChatFormat.LLAMA3, max_length=300) is None


def test_split_is_by_date_and_slices_span_the_window(examples: list[Any]) -> None:
    cutoff = dt.date(2024, 3, 24)
    train, held = split_examples(examples, cutoff)
    assert max(e.prompt.target_end for e in train) <= cutoff <= min(e.prompt.as_of for e in held)
    picked = spread(train, 5)
    assert len(picked) == 5 and picked[0] is train[0]
    assert [e.prompt.as_of for e in picked] == sorted(e.prompt.as_of for e in picked)


def test_prepare_split_cpu_slice(tokenizer: Any) -> None:
    settings = DataSettings(cutoff=dt.date(2023, 10, 1), max_length=1024, train_rows=6, eval_rows=3)
    split = prepare_split(settings, tokenizer, ChatFormat.DEEPSEEK_R1)
    assert len(split.train.examples) == 6 and len(split.held.examples) == 3
    assert all(len(e.input_ids) <= 1024 for e in [*split.train.encoded, *split.held.encoded])
    window = split.window()
    assert window["train_end"] <= "2023-10-01" <= window["eval_start"]
