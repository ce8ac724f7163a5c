"""The OpenAI-compatible API on the real vLLM CPU engines (tiny model, real peft adapters),
driven over loopback HTTP by the official ``openai`` client and by training's
``EndpointTeacher``. The service is the package's session app, served by uvicorn in the same
event loop (its engines live there)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from support.ci import require_module

from forecast.dataset import teacher_rows
from forecast.prompt import SYSTEM_PROMPT, render_user
from forecast.templates import ChatFormat, render_messages
from service.main import serving

openai = require_module("openai", "pip install 'dow30-forecaster[dev]'")

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(900)]
MESSAGES = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Will KO go up?"}]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def base_url(app: Any) -> AsyncIterator[str]:
    """The session app on a loopback port, served from the session loop (lifespan: the app's
    own, already running)."""
    async with serving(app) as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(base_url: str) -> AsyncIterator[Any]:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=600, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


async def test_models_list(api: Any) -> None:
    models = {m.id: m for m in (await api.models.list()).data}
    assert {"fingpt-llama", "fingpt-deepseek", "dow30"} <= set(models)
    versions = [m for name, m in models.items() if name.startswith("fingpt-llama@")]
    assert versions and all(m.owned_by == "dow30-forecaster" for m in versions)
    assert {m.model_extra["parent"] for m in versions} == {"HuggingFaceTB/SmolLM2-135M-Instruct"}


async def test_chat_plain_and_streamed_agree_and_count_real_tokens(api: Any, tokenizer: Any) -> None:
    ask = {"model": "fingpt-llama", "messages": MESSAGES, "max_tokens": 8, "temperature": 0}
    whole = await api.chat.completions.create(**ask)
    prompt = render_messages(MESSAGES[0]["content"], MESSAGES[1]["content"], ChatFormat.LLAMA3)
    assert whole.usage.prompt_tokens == len(tokenizer.encode(prompt, add_special_tokens=False))
    assert 0 < whole.usage.completion_tokens <= 8 and whole.system_fingerprint.startswith("fingpt-llama@")
    text = whole.choices[0].message.content
    assert text and whole.choices[0].finish_reason in ("stop", "length")

    stream = await api.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == text  # greedy: the same


async def test_completion_of_the_rendered_prompt(api: Any) -> None:
    chat = await api.chat.completions.create(model="fingpt-llama", messages=MESSAGES, max_tokens=6, temperature=0)
    prompt = render_messages(MESSAGES[0]["content"], MESSAGES[1]["content"], ChatFormat.LLAMA3)
    done = await api.completions.create(model="fingpt-llama", prompt=prompt, max_tokens=6, temperature=0)
    assert done.object == "text_completion" and done.usage.completion_tokens > 0
    assert done.choices[0].text.startswith(chat.choices[0].message.content)  # the chat stops at <|eot_id|>


async def test_unknown_model_is_not_found(api: Any) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await api.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert caught.value.code == "model_not_found" and caught.value.param == "model"


async def test_prompt_over_the_context_is_bad_request(api: Any) -> None:
    long = [{"role": "user", "content": "stocks " * 2100}]  # over the engines' 2,048 tokens
    with pytest.raises(openai.BadRequestError) as caught:
        await api.chat.completions.create(model="fingpt-llama", messages=long, max_tokens=4)
    assert caught.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        await api.completions.create(model="fingpt-deepseek", prompt="hello", max_tokens=4096)


async def test_teacher_answers_through_the_endpoint_then_from_its_cache(
    base_url: str, tmp_path: Path
) -> None:
    """Training's teacher writes answers through the service's chat route; a second pass over
    the same rows sends no request at all."""
    from training.teacher import EndpointTeacher, TeacherSettings, answer_rows

    rows = sorted(teacher_rows(), key=lambda r: len(render_user(r.prompt)))[:2]
    rows = [r.model_copy(update={"answer": None, "source": "market"}) for r in rows]
    settings = TeacherSettings(
        base_url=f"{base_url}/v1", model="fingpt-llama", api_key="sk-teacher", max_tokens=16,
        cache_dir=tmp_path / "teacher",
    )

    def run() -> tuple[list[Any], list[str], list[httpx.Request]]:
        sent: list[httpx.Request] = []
        transport = httpx.HTTPTransport()
        teacher = EndpointTeacher.from_settings(settings, Counting(transport, sent))
        answered, missing = answer_rows(rows, teacher)
        return answered, missing, sent

    first, missing, sent = await asyncio.to_thread(run)  # the server runs in this loop
    assert missing == [] and len(sent) == 2
    assert all(r.source == "teacher" and r.answer and r.answer.strip() for r in first)
    assert {r.headers["authorization"] for r in sent} == {"Bearer sk-teacher"}
    assert len(list((tmp_path / "teacher").glob("*.json"))) == 2
    assert json.loads(sent[0].content)["messages"][0]["content"] == SYSTEM_PROMPT
    again, missing, sent = await asyncio.to_thread(run)
    assert missing == [] and sent == [] and [r.answer for r in again] == [r.answer for r in first]


class Counting(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, sent: list[httpx.Request]) -> None:
        self._inner = inner
        self._sent = sent

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._sent.append(request)
        return self._inner.handle_request(request)
