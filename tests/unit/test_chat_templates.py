"""Each renderer is held to its base's official chat template, on two real FinGPT rows.

The expected strings are written from the templates' published text (Llama-3.1-8B-Instruct's
and DeepSeek-R1-Distill-Llama-8B's ``tokenizer_config.json``): Llama-3.1 always opens with the
system header carrying the knowledge cut-off and ``Today Date`` (here the row's ``as_of``) and
trims message contents; DeepSeek-R1-Distill puts the system text right after BOS and ends the
generation prompt with ``<｜Assistant｜><think>\\n``. The same renderings must come out of the
shipped template files through jinja (as transformers applies them) and through the tokenizer's
own ``apply_chat_template``, so a model served by any other stack sees the text trained here.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from forecast.answer import parse_answer
from forecast.dataset import OFFICIAL_FILE, SNAPSHOT
from forecast.prompt import SYSTEM_PROMPT, render_user
from forecast.templates import (
    SPECS,
    ChatFormat,
    answer_target,
    llama31_date,
    official_template,
    parse_llama2,
    render_chat,
)

ROWS = [json.loads(line) for line in (SNAPSHOT / "fingpt" / OFFICIAL_FILE).read_text().splitlines()]
# Two real rows: the first official row and one from another ticker and week.
PICKS = [0, 97]
BOS = {ChatFormat.LLAMA3: "<|begin_of_text|>", ChatFormat.DEEPSEEK_R1: "<｜begin▁of▁sentence｜>"}
BASE_OF = {ChatFormat.LLAMA3: "llama", ChatFormat.DEEPSEEK_R1: "deepseek"}


def _row(i: int) -> tuple[Any, str]:
    prompt = parse_llama2(ROWS[i]["prompt"])
    return prompt, ROWS[i]["answer"]


def _expected(fmt: ChatFormat, user: str, day: str) -> str:
    """The official rendering of [system, user] + generation prompt, written out by hand."""
    if fmt is ChatFormat.LLAMA3:
        return (
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "Cutting Knowledge Date: December 2023\n"
            f"Today Date: {day}\n\n"
            + SYSTEM_PROMPT.strip()
            + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
            + user.strip()
            + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        )
    return "<｜begin▁of▁sentence｜>" + SYSTEM_PROMPT + "<｜User｜>" + user + "<｜Assistant｜><think>\n"


def _jinja(fmt: ChatFormat, messages: list[dict[str, str]], **kwargs: Any) -> str:
    """Apply the shipped template file as transformers does (sandbox, trim/lstrip blocks)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(official_template(fmt)).render(
        messages=messages, bos_token=BOS[fmt], add_generation_prompt=True, **kwargs
    )


def test_the_two_rows_are_distinct_real_rows() -> None:
    (a, _), (b, _) = _row(PICKS[0]), _row(PICKS[1])
    assert (a.ticker, a.as_of) != (b.ticker, b.as_of)


def test_llama31_date_is_the_templates_format() -> None:
    assert llama31_date(dt.date(2024, 7, 26)) == "26 Jul 2024"  # the template's own default
    assert llama31_date(dt.date(2023, 10, 2)) == "02 Oct 2023"  # strftime %d: zero-padded


@pytest.mark.parametrize("i", PICKS)
@pytest.mark.parametrize("fmt", [ChatFormat.LLAMA3, ChatFormat.DEEPSEEK_R1])
def test_renderer_matches_the_official_rendering(fmt: ChatFormat, i: int) -> None:
    prompt, _ = _row(i)
    day = prompt.as_of.strftime("%d %b %Y")
    rendered = render_chat(prompt, fmt)
    assert rendered == _expected(fmt, render_user(prompt), day)
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": render_user(prompt)}]
    assert rendered == _jinja(fmt, messages, date_string=day)


def test_llama31_header_names_the_forecast_date_not_the_release_date() -> None:
    prompt, _ = _row(PICKS[1])
    rendered = render_chat(prompt, ChatFormat.LLAMA3)
    assert f"Today Date: {prompt.as_of.strftime('%d %b %Y')}\n" in rendered
    assert "26 Jul 2024" not in rendered


def test_without_a_system_prompt_llama31_keeps_its_dated_system_header() -> None:
    prompt, _ = _row(PICKS[0])
    bare = prompt.model_copy(update={"with_system": False})
    day = prompt.as_of.strftime("%d %b %Y")
    user = {"role": "user", "content": render_user(bare)}
    assert render_chat(bare, ChatFormat.LLAMA3) == _jinja(ChatFormat.LLAMA3, [user], date_string=day)
    assert render_chat(bare, ChatFormat.DEEPSEEK_R1) == _jinja(ChatFormat.DEEPSEEK_R1, [user])


@pytest.mark.parametrize("i", PICKS)
def test_llama31_training_text_is_the_templates_whole_conversation(i: int) -> None:
    """Prompt + target = the official rendering of the conversation with the answer in it."""
    prompt, answer = _row(i)
    day = prompt.as_of.strftime("%d %b %Y")
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": render_user(prompt)},
        {"role": "assistant", "content": answer.strip()},
    ]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    whole = env.from_string(official_template(ChatFormat.LLAMA3)).render(
        messages=messages, bos_token=BOS[ChatFormat.LLAMA3], add_generation_prompt=False, date_string=day
    )
    assert render_chat(prompt, ChatFormat.LLAMA3) + answer_target(answer.strip(), ChatFormat.LLAMA3) == whole


@pytest.mark.parametrize("i", PICKS)
def test_deepseek_target_closes_the_opened_think_block_then_answers(i: int) -> None:
    prompt, answer = _row(i)
    fmt = ChatFormat.DEEPSEEK_R1
    target = answer_target(answer, fmt)
    assert render_chat(prompt, fmt).endswith("<｜Assistant｜><think>\n")
    assert target == "\n</think>\n\n" + answer + "<｜end▁of▁sentence｜>"
    # The parser reads what the model writes after the prompt: the think block's tail first.
    assert parse_answer(target).prediction == parse_answer(answer).prediction


@pytest.mark.parametrize("fmt", [ChatFormat.LLAMA3, ChatFormat.DEEPSEEK_R1])
def test_tokenizer_apply_chat_template_gives_the_same_text_and_ids(
    fmt: ChatFormat, llama3_tokenizers: dict[str, Any]
) -> None:
    """The materialized tokenizers carry the official template: transformers renders the same."""
    tok = llama3_tokenizers[BASE_OF[fmt]]
    prompt, _ = _row(PICKS[0])
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": render_user(prompt)}]
    kwargs: dict[str, Any] = {"date_string": prompt.as_of.strftime("%d %b %Y")} if fmt is ChatFormat.LLAMA3 else {}
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
    rendered = render_chat(prompt, fmt)
    assert text == rendered
    ids = tok(rendered, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids(SPECS[fmt].bos)) == 1
    if fmt is ChatFormat.DEEPSEEK_R1:
        assert ids[-3:] == [128012, 128013, 198]  # <｜Assistant｜> <think> "\n"
    else:
        assert ids[-4:] == [128006, 78191, 128007, 271]  # <|start_header_id|>assistant<|end_header_id|>\n\n
