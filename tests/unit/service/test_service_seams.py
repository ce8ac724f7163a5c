"""Seams that a one-line change could break silently: a failed log write acknowledges
nothing, a batch really runs its tickers at once, an engine's refusal of a prompt is a 422,
a shadow is sampled at its stated fraction, an explicit unload succeeds, and a client that
goes away mid-stream releases its adapter lease."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from service.engine import Chunk, GenerationParams, LoraRef, PromptRejected
from service.testing import FakeEngine, error_of, parse_sse

BOUND_S = 20.0  # a bound on how long a condition may take, never a timing claim


async def until(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND_S
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {BOUND_S:g} s: {what}")
        await asyncio.sleep(0.005)


# -- a failed forecast-log write ----------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_failed_log_write_is_503_and_acknowledges_nothing(
    serve: Any, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    def boom(row: Any) -> None:
        raise OSError("disk I/O error")

    async with serve() as client:
        log = client.app.state.service.forecast_log  # type: ignore[attr-defined]
        monkeypatch.setattr(log, "add", boom)
        r = await client.post("/v1/forecast", json={"ticker": "KO", "stream": stream})
        monkeypatch.undo()
        rows = log.count()
    assert rows == 0
    if stream:  # the 200 went out with the first token; the result never does
        events = parse_sse(r.text)
        assert "result" not in [e for e, _ in events]
        assert events[-1][0] == "error"
        assert json.loads(events[-1][1])["error"]["code"] == "forecast_log_unavailable"
    else:
        assert r.status_code == 503, r.text
        assert error_of(r)["code"] == "forecast_log_unavailable"
        assert "prediction" not in r.json()


# -- batch concurrency --------------------------------------------------------------------


async def test_a_batch_has_all_its_tickers_in_flight_at_once(serve: Any, engines: Any) -> None:
    """The engine holds every generation until three are in flight: a batch that ran its
    tickers one at a time never gets there and fails on the bound."""
    tickers = ["KO", "JPM", "AAPL"]
    engines["llama"].gate = asyncio.Event()
    async with serve() as client:
        pending = asyncio.create_task(client.post(
            "/v1/forecast/batch", json={"tickers": tickers, "adapter": "fingpt-llama"}))
        try:
            await until(lambda: engines["llama"].running == len(tickers), "3 generations in flight")
        finally:
            engines["llama"].gate.set()
        r = await pending
    assert r.status_code == 200, r.text
    assert sorted(f["ticker"] for f in r.json()["forecasts"]) == sorted(tickers)
    assert r.json()["errors"] == []


# -- the engine refuses the prompt --------------------------------------------------------


async def test_a_prompt_the_engine_refuses_is_a_422(
    serve: Any, engines: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(prompt: str, params: GenerationParams, lora: LoraRef | None, request_id: str) -> Any:
        raise PromptRejected("prompt of 9000 tokens is longer than the context (2048)")
        yield  # an async generator, like the real one

    monkeypatch.setattr(engines["llama"], "generate", refuse)
    async with serve() as client:
        r = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama"})
        rows = client.app.state.service.forecast_log.count()  # type: ignore[attr-defined]
    assert r.status_code == 422, r.text
    assert error_of(r)["code"] == "prompt_rejected"
    assert "longer than the context" in error_of(r)["message"]
    assert rows == 0


# -- shadow_fraction < 1 ------------------------------------------------------------------


async def test_the_shadow_is_sampled_at_its_fraction(serve: Any, admin: dict[str, str]) -> None:
    n, p = 4000, 0.25
    table = {"arms": [{"name": "A", "adapter": "fingpt-llama", "weight": 1}],
             "shadow": "fingpt-deepseek", "shadow_fraction": p}
    async with serve() as client:
        put = await client.put("/v1/routing", json=table, headers=admin)
        router = client.app.state.service.router  # type: ignore[attr-defined]
        routes = [router.choose(f"user-{i}") for i in range(n)]
        again = [router.choose(f"user-{i}") for i in range(200)]
    assert put.status_code == 200, put.text
    assert put.json()["shadow_fraction"] == p
    shadowed = sum(r.shadow == "fingpt-deepseek" for r in routes)
    assert all(r.shadow in (None, "fingpt-deepseek") for r in routes)
    # Binomial(4000, 0.25) within 4 sd (±110): a correct router fails with probability < 1e-4.
    assert abs(shadowed - n * p) <= 4 * math.sqrt(n * p * (1 - p)), shadowed
    assert [r.shadow for r in again] == [r.shadow for r in routes[:200]]  # sticky per key


# -- a successful unload ------------------------------------------------------------------


async def test_an_unused_version_unloads(
    serve: Any, admin: dict[str, str], engines: Any, adapter_root: Any
) -> None:
    from service.testing import write_stub_adapter

    write_stub_adapter(adapter_root, "fingpt-llama", "v2", "llama")
    async with serve() as client:
        staged = await client.post("/v1/adapters", headers=admin,
                                   json={"name": "fingpt-llama", "version": "v2", "promote": False})
        lora_id = staged.json()["lora_id"]
        assert lora_id in engines["llama"].loras
        gone = await asyncio.wait_for(
            client.delete("/v1/adapters/fingpt-llama/versions/v2", headers=admin), BOUND_S)
        listing = (await client.get("/v1/adapters", headers=admin)).json()
        direct = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama@v2"})
        serving = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama"})
    assert gone.status_code == 200, gone.text
    assert (gone.json()["version"], gone.json()["loaded"]) == ("v2", False)
    assert lora_id not in engines["llama"].loras and lora_id in engines["llama"].removed
    assert [a["version"] for a in listing["adapters"] if a["name"] == "fingpt-llama"] == ["v1"]
    assert direct.status_code == 404 and error_of(direct)["code"] == "adapter_not_loaded"
    assert serving.status_code == 200 and serving.json()["adapter"] == "fingpt-llama@v1"


# -- a client that goes away mid-stream ---------------------------------------------------


class HoldsAfterTheFirstToken(FakeEngine):
    """Sends one token, then never another: only closing the pipeline ends it."""

    async def generate(
        self, prompt: str, params: GenerationParams, lora: LoraRef | None, request_id: str
    ) -> AsyncIterator[Chunk]:
        self.running += 1
        try:
            yield Chunk(delta="[Positive", tokens=1, finished=False, finish_reason=None, queue_s=0.0)
            await asyncio.Event().wait()
        finally:
            self.running -= 1


async def test_a_client_that_disconnects_mid_stream_releases_its_lease(serve: Any, engines: Any) -> None:
    engines["llama"] = HoldsAfterTheFirstToken("llama")
    body = json.dumps({"ticker": "KO", "adapter": "fingpt-llama", "stream": True}).encode()
    gone = asyncio.Event()
    sent: list[dict[str, Any]] = []
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
        if b"event: token" in message.get("body", b""):
            gone.set()  # the client reads one token, then closes the connection

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/forecast", "raw_path": b"/v1/forecast", "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json"), (b"host", b"svc")],
        "client": ("127.0.0.1", 5000), "server": ("svc", 80),
    }
    async with serve() as client:
        app = client.app  # type: ignore[attr-defined]
        registry = app.state.service.registry
        adapter = registry.resolve("fingpt-llama")
        call = asyncio.create_task(app(scope, receive, send))
        await until(gone.is_set, "the first token sent")
        await until(lambda: adapter.inflight == 0, "the adapter lease released")
        await until(lambda: engines["llama"].running == 0, "the generation closed")
        await asyncio.wait_for(call, BOUND_S)
        rows = app.state.service.forecast_log.count()
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert rows == 0
