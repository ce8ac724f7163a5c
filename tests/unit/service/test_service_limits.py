"""Backpressure and engine failures answer 503 with Retry-After, never a hang or a 500."""

from __future__ import annotations

import asyncio
from typing import Any

from service.testing import error_of


async def test_over_capacity_is_503_with_retry_after(serve: Any, engines: Any) -> None:
    llama = engines["llama"]
    llama.gate = asyncio.Event()
    body = {"ticker": "KO", "adapter": "fingpt-llama"}
    async with serve(max_inflight=2, retry_after_s=3) as client:
        held = [asyncio.create_task(client.post("/v1/forecast", json=body)) for _ in range(2)]
        while llama.running < 2:
            await asyncio.sleep(0.01)
        shed = await client.post("/v1/forecast", json=body)
        llama.gate.set()
        done = await asyncio.gather(*held)
        after = await client.post("/v1/forecast", json=body)
    assert shed.status_code == 503 and shed.headers["Retry-After"] == "3"
    assert error_of(shed)["code"] == "overloaded"
    assert [r.status_code for r in done] == [200, 200] and after.status_code == 200


async def test_dead_engine_is_503_and_nothing_is_logged(serve: Any, engines: Any) -> None:
    async with serve() as client:
        engines["llama"].dead = True
        r = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama"})
        other = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-deepseek"})
        log = client.app.state.service.forecast_log  # type: ignore[attr-defined]
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 503 and error_of(r)["code"] == "engine_unavailable"
    assert "Retry-After" in r.headers
    assert other.status_code == 200 and log.count() == 1
    assert (
        'forecast_requests_total{adapter="fingpt-llama",arm="direct",route="forecast",'
        'status="503",version="v1"} 1.0'
    ) in metrics


async def test_dead_engine_mid_stream_ends_with_an_error_event(serve: Any, engines: Any) -> None:
    from service.testing import parse_sse

    async with serve() as client:
        engines["deepseek"].dead = True
        r = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-deepseek", "stream": True})
    assert r.status_code == 200
    events = parse_sse(r.text)
    assert events[-1][0] == "error" and '"engine_unavailable"' in events[-1][1]


async def test_batch_stream_sends_results_then_done(serve: Any) -> None:
    import json

    from service.testing import parse_sse

    async with serve() as client:
        r = await client.post(
            "/v1/forecast/batch", json={"tickers": ["KO", "JPM", "nope"], "stream": True}
        )
    events = parse_sse(r.text)
    assert [e for e, _ in events].count("result") == 2
    assert [e for e, _ in events].count("error") == 1
    assert events[-1][0] == "done"
    assert json.loads(events[-1][1]) == {"as_of": "2024-01-05", "forecasts": 2, "errors": 1}


async def test_batch_forecasts_are_counted_and_hold_no_adapter_after(serve: Any) -> None:
    async with serve() as client:
        r = await client.post("/v1/forecast/batch", json={"tickers": ["KO", "JPM"], "adapter": "fingpt-llama"})
        metrics = (await client.get("/metrics")).text
        state = client.app.state.service  # type: ignore[attr-defined]
        held = state.registry.resolve("fingpt-llama").inflight
    assert r.status_code == 200 and len(r.json()["forecasts"]) == 2
    assert (
        'forecast_requests_total{adapter="fingpt-llama",arm="direct",route="batch",'
        'status="200",version="v1"} 2.0'
    ) in metrics
    assert held == 0 and state.gateway.admission.inflight == 0


async def test_too_many_tickers_is_422(serve: Any) -> None:
    async with serve(max_batch=2) as client:
        r = await client.post("/v1/forecast/batch", json={"tickers": ["KO", "JPM", "V"]})
    assert r.status_code == 422 and error_of(r)["code"] == "batch_too_large"
