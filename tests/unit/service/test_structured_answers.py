"""Answers decoded under the FinGPT answer expression: the forecaster sends the regex fitted
to ``max_new_tokens`` to an engine with structured output, and none otherwise."""

from __future__ import annotations

import re
from typing import Any

import pytest

from forecast.answer_format import LIMITS, answer_regex, max_answer_chars
from forecast.templates import ChatFormat
from service.generation import structured_regex
from service.testing import FakeEngine


@pytest.fixture
def engines() -> dict[str, FakeEngine]:
    return {
        "llama": FakeEngine("llama", structured_output=True),
        "deepseek": FakeEngine("deepseek", structured_output=True),
    }


async def _forecast(client: Any, adapter: str) -> dict[str, Any]:
    r = await client.post("/v1/forecast", json={"ticker": "AXP", "adapter": adapter})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_each_base_gets_its_formats_expression_fitted_to_the_budget(
    serve: Any, engines: dict[str, FakeEngine]
) -> None:
    async with serve(max_new_tokens=700) as client:
        await _forecast(client, "fingpt-llama@v1")
        await _forecast(client, "fingpt-deepseek@v1")
    llama, deepseek = engines["llama"].params[-1], engines["deepseek"].params[-1]
    assert llama.regex == answer_regex(ChatFormat.LLAMA3, LIMITS.fitting(700, ChatFormat.LLAMA3))
    assert deepseek.regex == answer_regex(ChatFormat.DEEPSEEK_R1, LIMITS.fitting(700, ChatFormat.DEEPSEEK_R1))
    assert llama.regex != deepseek.regex and deepseek.regex is not None
    assert deepseek.regex.startswith(r"[\n -;=-~]{0,")  # the bounded reasoning comes first
    assert llama.max_tokens == 700
    for fmt in (ChatFormat.LLAMA3, ChatFormat.DEEPSEEK_R1):  # a whole answer fits the budget
        assert max_answer_chars(fmt, LIMITS.fitting(700, fmt)) <= 700


async def test_the_fake_answer_the_engine_returns_matches_its_expression(
    serve: Any, engines: dict[str, FakeEngine]
) -> None:
    async with serve(max_new_tokens=1024) as client:
        body = await _forecast(client, "fingpt-llama@v1")
    assert body["prediction"]["source"] == "line"  # read from the answer's own Prediction line
    assert re.fullmatch(engines["llama"].params[-1].regex or "", body["raw_text"])


async def test_the_setting_turns_the_constraint_off(serve: Any, engines: dict[str, FakeEngine]) -> None:
    async with serve(structured_answers=False) as client:
        await _forecast(client, "fingpt-llama@v1")
    assert engines["llama"].params[-1].regex is None


async def test_an_engine_without_structured_output_gets_free_text(serve: Any, engines: dict[str, FakeEngine]) -> None:
    engines["llama"] = FakeEngine("llama")
    async with serve() as client:
        await _forecast(client, "fingpt-llama@v1")
    assert engines["llama"].params[-1].regex is None


def test_the_expression_is_built_once_per_format_and_budget() -> None:
    structured_regex.cache_clear()
    first = structured_regex(ChatFormat.LLAMA3, 1024)
    assert structured_regex(ChatFormat.LLAMA3, 1024) is first
    assert structured_regex.cache_info().hits == 1
