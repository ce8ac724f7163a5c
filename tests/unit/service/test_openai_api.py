"""The OpenAI-compatible routes over FakeEngines: response and chunk shapes, usage, the chat
template, errors in the OpenAI shape, A/B stickiness by key, admission, metrics, and the
adapter lease and admission slot released when a streaming client goes away."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from forecast.templates import ChatFormat, render_messages
from service.engine import Chunk, GenerationParams, LoraRef
from service.settings import EngineSettings
from service.testing import TINY_ID, FakeEngine, error_of

BOUND_S = 10.0
CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say up or down."}]


class Words:
    """A tokenizer of whitespace-separated words (the fake engine streams words)."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [len(w) for w in text.split()]


def words(_: EngineSettings) -> Words:
    return Words()


class RecordingEngine(FakeEngine):
    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.prompts: list[str] = []

    async def generate(
        self, prompt: str, params: GenerationParams, lora: LoraRef | None, request_id: str
    ) -> AsyncIterator[Chunk]:
        self.prompts.append(prompt)
        async for chunk in super().generate(prompt, params, lora, request_id):
            yield chunk


@pytest.fixture
def engines() -> dict[str, FakeEngine]:
    return {"llama": RecordingEngine("llama"), "deepseek": RecordingEngine("deepseek")}


def openai_error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


def data_lines(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, asserting nothing else is in it."""
    blocks = text.split("\n\n")
    assert blocks[-1] == "", "the body ends with a blank line"
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks[:-1]), text
    return [b.removeprefix("data: ") for b in blocks[:-1]]


async def test_models_lists_aliases_versions_and_the_router(serve: Any) -> None:
    async with serve(tokenizer_for=words) as client:
        r = await client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    cards = {m["id"]: m for m in body["data"]}
    assert set(cards) == {"fingpt-llama", "fingpt-deepseek", "fingpt-llama@v1", "fingpt-deepseek@v1", "dow30"}
    for ref in ("fingpt-llama", "fingpt-deepseek@v1"):
        assert cards[ref]["object"] == "model" and cards[ref]["parent"] == TINY_ID
        assert cards[ref]["owned_by"] == "dow30-forecaster" and cards[ref]["max_model_len"] == 8192
    assert cards["dow30"]["parent"] is None


async def test_chat_completion_shape_usage_and_template(serve: Any, engines: Any) -> None:
    body = {"model": "fingpt-llama", "messages": MESSAGES, "max_tokens": 5, "temperature": 0.5,
            "top_p": 0.9, "seed": 3, "stop": ["XX"]}
    async with serve(tokenizer_for=words) as client:
        r = await client.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    prompt = render_messages("You are terse.", "Say up or down.", ChatFormat.LLAMA3)
    assert engines["llama"].prompts == [prompt]
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    assert out["model"] == "fingpt-llama" and out["system_fingerprint"] == "fingpt-llama@v1"
    [choice] = out["choices"]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"
    assert len(choice["message"]["content"].split(" ")) == 5
    assert out["usage"] == {"prompt_tokens": len(prompt.split()), "completion_tokens": 5,
                            "total_tokens": len(prompt.split()) + 5}
    params = engines["llama"].params[-1]
    assert (params.max_tokens, params.temperature, params.top_p, params.seed) == (5, 0.5, 0.9, 3)
    assert params.stop == ("XX", "<|eot_id|>")
    assert r.headers["X-Forecast-Arm"] == "direct"


async def test_a_conversation_renders_with_the_official_template(serve: Any, engines: Any) -> None:
    turns = [{"role": "user", "content": "Up?"}, {"role": "assistant", "content": "Yes."},
             {"role": "user", "content": [{"type": "text", "text": "Sure?"}]}]
    async with serve(tokenizer_for=words) as client:
        r = await client.post(CHAT, json={"model": "fingpt-deepseek@v1", "messages": turns})
    assert r.status_code == 200, r.text
    assert engines["deepseek"].prompts == [
        "<｜begin▁of▁sentence｜><｜User｜>Up?<｜Assistant｜>Yes.<｜end▁of▁sentence｜>"
        "<｜User｜>Sure?<｜Assistant｜><think>\n"
    ]
    assert engines["deepseek"].params[-1].max_tokens == 64  # the service's max_new_tokens


async def test_completion_passes_the_prompt_verbatim(serve: Any, engines: Any) -> None:
    async with serve(tokenizer_for=words) as client:
        r = await client.post("/v1/completions", json={"model": "fingpt-llama@v1", "prompt": "a b c", "max_tokens": 2})
    out = r.json()
    assert r.status_code == 200 and out["object"] == "text_completion"
    assert engines["llama"].prompts == ["a b c"] and engines["llama"].params[-1].stop == ()
    assert out["choices"][0]["finish_reason"] == "length" and "text" in out["choices"][0]
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


async def test_chat_stream_framing_and_usage(serve: Any) -> None:
    body = {"model": "fingpt-llama", "messages": MESSAGES, "max_tokens": 6}
    async with serve(tokenizer_for=words) as client:
        whole = (await client.post(CHAT, json=body)).json()
        r = await client.post(CHAT, json=body | {"stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    payloads = data_lines(r.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    *deltas, finish, used = chunks
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert all(c["usage"] is None for c in [*deltas, finish])
    assert used["choices"] == [] and used["usage"] == whole["usage"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in deltas)
    assert text == whole["choices"][0]["message"]["content"]


async def test_completion_stream_without_usage(serve: Any) -> None:
    body = {"model": "fingpt-llama", "prompt": "x y", "max_tokens": 3, "stream": True}
    async with serve(tokenizer_for=words) as client:
        r = await client.post("/v1/completions", json=body)
    payloads = data_lines(r.text)
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert payloads[-1] == "[DONE]" and all("usage" not in c for c in chunks)
    assert all(c["object"] == "text_completion" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "length"]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"model": "nope", "messages": MESSAGES}, 404, "model_not_found", "model"),
        ({"model": "fingpt-llama@v9", "messages": MESSAGES}, 404, "model_not_found", "model"),
        ({"model": "fingpt-llama", "messages": MESSAGES, "n": 2}, 400, "unsupported_parameter", "n"),
        ({"model": "fingpt-llama", "messages": MESSAGES, "logprobs": True}, 400, "unsupported_parameter", "logprobs"),
        ({"model": "fingpt-llama", "messages": MESSAGES, "temperature": 5}, 400, "invalid_request", "temperature"),
        ({"model": "fingpt-llama"}, 400, "invalid_request", "messages"),
        ({"model": "fingpt-llama", "messages": MESSAGES, "max_tokens": 250}, 400, "context_length_exceeded", "messages"),
        ({"model": "fingpt-llama", "messages": [{"role": "user", "content": "w " * 300}]}, 400,
         "context_length_exceeded", "messages"),
    ],
    ids=["unknown", "unknown-version", "n", "logprobs", "validation", "missing", "too-long", "prompt-too-long"],
)
async def test_errors_take_the_openai_shape(
    serve: Any, engines: Any, body: dict[str, Any], status: int, code: str, param: str
) -> None:
    small = [{"base": "llama", "max_model_len": 256}, {"base": "deepseek", "max_model_len": 256}]
    async with serve(tokenizer_for=words, engines=small) as client:
        r = await client.post(CHAT, json=body)
        streamed = await client.post(CHAT, json=body | {"stream": True})
        metrics = (await client.get("/metrics")).text
    for response in (r, streamed):
        assert response.status_code == status, response.text
        error = openai_error_of(response)
        assert (error["code"], error["param"]) == (code, param), error
    assert engines["llama"].prompts == []
    if code != "invalid_request":  # refused by the service, not by the body's schema: counted
        assert f'route="openai_chat",status="{status}"' in metrics


async def test_a_body_that_is_not_text_is_400_in_the_openai_shape(serve: Any) -> None:
    async with serve(tokenizer_for=words) as client:
        r = await client.post(CHAT, content=b"\x8b\x03", headers={"content-type": "application/json"})
    assert r.status_code == 400 and openai_error_of(r)["type"] == "invalid_request_error"


async def test_the_rest_of_the_api_keeps_its_shape(serve: Any) -> None:
    async with serve(tokenizer_for=words) as client:
        r = await client.post("/v1/forecast", json={"ticker": "AAPL", "weeks": 0})
    assert r.status_code == 422 and error_of(r)["code"] == "invalid_request"


async def test_router_model_is_sticky_by_key_and_user(serve: Any) -> None:
    async with serve(tokenizer_for=words) as client:
        router = client.app.state.service.router
        for key in (f"client-{i}" for i in range(12)):
            expected = router.choose(key).alias
            by_header = [
                (await client.post(CHAT, json={"model": "dow30", "messages": MESSAGES, "max_tokens": 1},
                                   headers={"X-Client-Key": key})).json()["system_fingerprint"]
                for _ in range(2)
            ]
            by_user = await client.post(CHAT, json={"model": "dow30", "messages": MESSAGES, "max_tokens": 1, "user": key})
            assert by_header == [f"{expected}@v1"] * 2
            assert by_user.json()["system_fingerprint"] == f"{expected}@v1"
            assert by_user.headers["X-Forecast-Arm"] == expected  # arms are named after aliases


async def test_overload_is_503_with_retry_after(serve: Any, engines: Any) -> None:
    engines["llama"].gate = asyncio.Event()  # hold the one slot
    async with serve(tokenizer_for=words, max_inflight=1, retry_after_s=3) as client:
        held = asyncio.create_task(client.post(CHAT, json={"model": "fingpt-llama", "messages": MESSAGES}))
        await until(lambda: engines["llama"].running == 1, "the first request in the engine")
        shed = await client.post(CHAT, json={"model": "fingpt-llama", "messages": MESSAGES, "stream": True})
        engines["llama"].gate.set()
        assert (await held).status_code == 200
    assert shed.status_code == 503 and shed.headers["Retry-After"] == "3"
    assert openai_error_of(shed)["code"] == "overloaded"


async def test_metrics_per_adapter_with_a_route_label(serve: Any) -> None:
    async with serve(tokenizer_for=words) as client:
        await client.post(CHAT, json={"model": "fingpt-llama", "messages": MESSAGES, "max_tokens": 4})
        await client.post("/v1/completions", json={"model": "fingpt-llama", "prompt": "p", "max_tokens": 4})
        metrics = (await client.get("/metrics")).text
    for route in ("openai_chat", "openai_completions"):
        labels = f'adapter="fingpt-llama",arm="direct",route="{route}"'
        assert f'forecast_requests_total{{{labels},status="200",version="v1"}} 1.0' in metrics
        assert f'forecast_openai_generated_tokens_total{{{labels},version="v1"}} 4.0' in metrics
        assert f'forecast_openai_request_duration_seconds_count{{{labels},version="v1"}} 1.0' in metrics
        assert f'forecast_openai_time_to_first_token_seconds_count{{{labels},version="v1"}} 1.0' in metrics


async def until(predicate: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND_S
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {BOUND_S:g} s: {what}")
        await asyncio.sleep(0.005)


async def test_a_client_leaving_a_stream_releases_lease_and_slot(serve: Any, engines: Any) -> None:
    """The client reads the first content chunk and disconnects: the generation is closed,
    the adapter lease and the admission slot are released at once."""
    body = json.dumps({"model": "fingpt-llama", "messages": MESSAGES, "stream": True}).encode()
    engines["llama"].delay_s = 0.01
    sent: list[dict[str, Any]] = []
    gone = asyncio.Event()
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if b'"content":"' in message.get("body", b"") and b'"role"' not in message.get("body", b""):
            gone.set()

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": CHAT, "raw_path": CHAT.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json"), (b"host", b"svc")],
        "client": ("127.0.0.1", 5000), "server": ("svc", 80),
    }
    async with serve(tokenizer_for=words) as client:
        app = client.app
        state = app.state.service
        adapter = state.registry.resolve("fingpt-llama")
        call = asyncio.create_task(app(scope, receive, send))
        await until(gone.is_set, "the first content chunk sent")
        await until(lambda: adapter.inflight == 0, "the adapter lease released")
        await until(lambda: state.gateway.admission.inflight == 0, "the admission slot released")
        await until(lambda: engines["llama"].running == 0, "the generation closed")
        await asyncio.wait_for(call, BOUND_S)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert not any(b"[DONE]" in m.get("body", b"") for m in sent)
