"""Teacher answers: an OpenAI-compatible endpoint behind a disk cache, or the bundled GPT-4."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from forecast.dataset import teacher_rows
from forecast.prompt import Instruction
from training.teacher import (
    BundledTeacher,
    EndpointTeacher,
    TeacherError,
    TeacherSettings,
    answer_rows,
    explain_form,
    teacher_from_settings,
)

ANSWER = "[Positive Developments]:\n1. a\n\n[Potential Concerns]:\n1. b\n\n[Prediction & Analysis]:\nok"


def fake_endpoint(calls: list[dict[str, object]], status: int = 200) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        calls.append({"url": str(request.url), "auth": request.headers.get("authorization"),
                      "body": json.loads(request.content)})
        if status != 200:
            return httpx.Response(status, json={"error": {"message": "boom"}})
        return httpx.Response(200, json={"choices": [{"message": {"content": ANSWER}}]})

    return httpx.MockTransport(handle)


def settings(tmp_path: Path) -> TeacherSettings:
    return TeacherSettings(
        base_url="http://teacher.test/v1", model="gpt-4o", api_key="sk-test", cache_dir=tmp_path
    )


def test_endpoint_answers_explain_prompts_and_caches(tmp_path: Path) -> None:
    calls: list[dict[str, object]] = []
    teacher = EndpointTeacher.from_settings(settings(tmp_path), fake_endpoint(calls))
    row = teacher_rows()[0].model_copy(update={"answer": None, "source": "market"})
    answered, missing = answer_rows([row, row], teacher)
    assert missing == [] and [r.answer for r in answered] == [ANSWER, ANSWER]
    assert len(calls) == 1  # the second row hit the cache
    assert calls[0]["url"] == "http://teacher.test/v1/chat/completions"
    assert calls[0]["auth"] == "Bearer sk-test"
    body = calls[0]["body"]
    assert isinstance(body, dict) and body["model"] == "gpt-4o"
    assert "let's assume your prediction" in body["messages"][1]["content"]
    # a fresh client with the same cache costs nothing
    again: list[dict[str, object]] = []
    cached = EndpointTeacher.from_settings(settings(tmp_path), fake_endpoint(again))
    assert cached.answer(explain_form(row)) == ANSWER and again == []


def test_endpoint_failure_is_a_teacher_error(tmp_path: Path) -> None:
    teacher = EndpointTeacher.from_settings(settings(tmp_path), fake_endpoint([], status=500))
    row = teacher_rows()[0]
    with pytest.raises(TeacherError):
        teacher.answer(explain_form(row))
    assert list(tmp_path.glob("*.json")) == []
    _, missing = answer_rows([row.model_copy(update={"answer": None})], teacher)
    assert missing == [row.key]


def test_offline_the_bundled_answers_serve() -> None:
    teacher = teacher_from_settings(TeacherSettings(base_url=None))
    assert isinstance(teacher, BundledTeacher)
    row = teacher_rows()[5]
    prompt = explain_form(row)
    assert prompt.instruction is Instruction.EXPLAIN and prompt.assumed_bin == row.label
    assert teacher.answer(prompt) == row.answer
    with pytest.raises(TeacherError):
        teacher.answer(prompt.model_copy(update={"ticker": "ZZZ"}))


def test_max_tokens_is_sent_when_set_and_a_null_answer_is_an_error(tmp_path: Path) -> None:
    calls: list[dict[str, object]] = []
    capped = settings(tmp_path).model_copy(update={"max_tokens": 64})
    teacher = EndpointTeacher.from_settings(capped, fake_endpoint(calls))
    row = teacher_rows()[0]
    teacher.answer(explain_form(row))
    body = calls[0]["body"]
    assert isinstance(body, dict) and body["max_tokens"] == 64
    assert "max_tokens" not in EndpointTeacher.from_settings(settings(tmp_path)).request_body(explain_form(row))

    def refusal(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"message": {"content": None}}]})

    empty = EndpointTeacher.from_settings(settings(tmp_path / "other"), httpx.MockTransport(refusal))
    with pytest.raises(TeacherError):
        empty.answer(explain_form(row))
