"""The service on the real vLLM CPU engine: forecast, stream, batch, hot-swap while
requests are in flight, a failed load that keeps the old version, and the A/B split.

Races are ordered by gates (``support.gates``): generations are held on the real engine after
their first token until the test lets them go; nothing waits on the machine's speed."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.gates import held_generations, until

from forecast.answer import bin_phrases
from service.manifest import WEIGHTS
from service.testing import error_of, parse_sse

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(900)]


async def test_ready_and_forecast(client: httpx.AsyncClient) -> None:
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    r = await client.post("/v1/forecast", json={"ticker": "AAPL", "adapter": "fingpt-llama"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["adapter"] == "fingpt-llama@v1" and body["base"] == "llama"
    assert body["week_start"] == "2023-12-31" and body["company"] == "Apple Inc"
    assert 0 < body["generated_tokens"] <= 8 and body["raw_text"]
    # 8 tokens end the answer before its Prediction line: the engine is asked for the bin with
    # vLLM's structured output (one of the twelve phrases), and the forecast says so
    assert body["parse_error"] and "Prediction:" not in body["raw_text"]
    assert body["prediction"]["source"] == "probe"
    assert " " + body["prediction"]["text"] in bin_phrases()
    assert body["prediction"]["bin"][0] == ("U" if body["prediction"]["direction"] == "up" else "D")
    assert body["latency"]["ttft_s"] > 0 and body["latency"]["total_s"] >= body["latency"]["ttft_s"]


async def test_stream_sends_tokens_then_the_result(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/forecast", json={"ticker": "MSFT", "adapter": "fingpt-deepseek", "stream": True})
    assert r.status_code == 200
    events = parse_sse(r.text)
    assert events[-1][0] == "result" and {e for e, _ in events[:-1]} == {"token"}
    result = json.loads(events[-1][1])
    assert "".join(json.loads(d)["text"] for e, d in events if e == "token") == result["raw_text"]
    assert result["adapter"] == "fingpt-deepseek@v1"


async def test_batch_runs_tickers_concurrently(client: httpx.AsyncClient, engines: Any) -> None:
    """Every generation of the batch is held after its first token on the real engine until
    both valid tickers are there at once: a batch that ran its tickers one at a time never
    gets the second one started and fails on the bound."""
    with held_generations(engines["deepseek"], hold=lambda lora: True) as gate:
        pending = asyncio.create_task(client.post(
            "/v1/forecast/batch", json={"tickers": ["KO", "JPM", "ZZZZ"], "adapter": "fingpt-deepseek"}))
        await until(lambda: gate.held == 2, "both tickers' generations in flight together")
        gate.release()
        r = await pending
    body = r.json()
    assert r.status_code == 200, r.text
    assert sorted(f["ticker"] for f in body["forecasts"]) == ["JPM", "KO"]
    assert [e["code"] for e in body["errors"]] == ["unknown_ticker"]


async def test_hot_swap_while_requests_are_in_flight(
    client: httpx.AsyncClient, app: Any, admin: dict[str, str], engines: Any
) -> None:
    """Four requests on v1 are held on the real engine after their first token while v2 is
    loaded and promoted; a request sent after the swap is answered by v2 while they are still
    held; released, they finish on v1, which is unloaded only then."""
    registry = app.state.service.registry
    old = registry.resolve("fingpt-llama")
    tickers = ["V", "MMM", "HD", "CAT"]

    def on_old(lora: Any) -> bool:
        return lora is not None and lora.lora_id == old.lora.lora_id

    with held_generations(engines["llama"], hold=on_old) as gate:
        held = [
            asyncio.create_task(client.post("/v1/forecast", json={"ticker": t, "adapter": "fingpt-llama"}))
            for t in tickers
        ]
        await until(lambda: gate.held == len(tickers), "four v1 generations held")
        swap = await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2"}, headers=admin)
        assert swap.status_code == 201, swap.text
        assert old.retired and old.inflight == len(tickers)  # flipped while v1 was generating
        after = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama"})
        assert after.status_code == 200, after.text
        assert after.json()["adapter"] == "fingpt-llama@v2"
        assert not any(t.done() for t in held) and gate.held == len(tickers)
        assert old.lora.lora_id in await engines["llama"].list_loras()  # not unloaded under them
        gate.release()
        results = await asyncio.gather(*held)
    await registry.wait_unloaded()
    assert [r.status_code for r in results] == [200] * len(tickers)
    assert {r.json()["adapter"] for r in results} == {"fingpt-llama@v1"}
    assert old.lora.lora_id not in await engines["llama"].list_loras()


async def test_failed_load_keeps_the_old_version(
    client: httpx.AsyncClient, admin: dict[str, str], adapter_root: Path
) -> None:
    serving = (await client.get("/v1/adapters", headers=admin)).json()["aliases"]["fingpt-deepseek"]
    broken = adapter_root / "fingpt-deepseek" / "v2"
    shutil.copytree(adapter_root / "fingpt-deepseek" / "v1", broken)
    manifest = json.loads((broken / "adapter.json").read_text())
    (broken / "adapter.json").write_text(json.dumps({**manifest, "version": "v2"}))
    data = (broken / WEIGHTS).read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    (broken / WEIGHTS).write_bytes(data[: 8 + header_len + 16])  # header intact, tensors cut
    try:
        r = await client.post("/v1/adapters", json={"name": "fingpt-deepseek", "version": "v2"}, headers=admin)
        after = (await client.get("/v1/adapters", headers=admin)).json()
        forecast = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-deepseek"})
    finally:
        shutil.rmtree(broken)
    assert r.status_code == 422 and error_of(r)["code"] == "engine_load_failed"
    assert after["aliases"]["fingpt-deepseek"] == serving
    assert all(a["version"] != "v2" for a in after["adapters"] if a["name"] == "fingpt-deepseek")
    assert forecast.status_code == 200 and forecast.json()["adapter"] == serving


async def test_ab_split_and_stickiness(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    n, p = 40, 0.5
    table = {"arms": [{"name": "A", "adapter": "fingpt-llama", "weight": 1},
                      {"name": "B", "adapter": "fingpt-deepseek", "weight": 1}]}
    assert (await client.put("/v1/routing", json=table, headers=admin)).status_code == 200

    async def ask(key: str) -> httpx.Response:
        return await client.post("/v1/forecast", json={"ticker": "KO"}, headers={"X-Client-Key": key})

    results = await asyncio.gather(*(ask(f"user-{i}") for i in range(n)))
    assert [r.status_code for r in results] == [200] * n
    arms = Counter(r.json()["arm"] for r in results)
    for r in results:
        body = r.json()
        assert body["adapter"].startswith("fingpt-llama@" if body["arm"] == "A" else "fingpt-deepseek@")
    # Binomial(40, 0.5) within 4 sd: a correct router fails this with probability < 1e-4.
    assert abs(arms["A"] - n * p) <= 4 * math.sqrt(n * p * (1 - p)), arms
    again = await asyncio.gather(*(ask(f"user-{i}") for i in range(3)))
    assert [r.json()["arm"] for r in again] == [r.json()["arm"] for r in results[:3]]
