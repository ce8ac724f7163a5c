"""The forecast API's shape, and every bad input answered 4xx in the one error shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.testing import error_of, parse_sse


async def test_forecast_has_the_documented_shape(serve: Any) -> None:
    async with serve() as client:
        r = await client.post("/v1/forecast", json={"ticker": "aapl"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ticker"] == "AAPL"
    assert body["company"] == "Apple Inc"
    assert body["as_of"] == body["week_start"] == "2023-12-31"
    assert body["week_end"] == "2024-01-07"
    assert body["prediction"]["direction"] in ("up", "down")
    assert body["prediction"]["bin"][0] in "UD"
    assert body["positive_developments"] and body["concerns"] and body["analysis"]
    assert body["adapter"] in ("fingpt-llama@v1", "fingpt-deepseek@v1")
    assert body["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert body["arm"] in ("fingpt-llama", "fingpt-deepseek")
    assert r.headers["X-Forecast-Arm"] == body["arm"]
    snapshot = {"profile": "snapshot", "prices": "snapshot", "news": "snapshot", "financials": "snapshot"}
    assert body["freshness"] == {"stale": False, "stale_sources": [], "sources": snapshot}
    latency = body["latency"]
    for key in ("prompt_build_s", "queue_s", "ttft_s", "generation_s", "total_s"):
        assert latency[key] is not None and latency[key] >= 0
    assert body["generated_tokens"] > 0


async def test_explicit_adapter_and_historical_date(serve: Any) -> None:
    async with serve() as client:
        r = await client.post(
            "/v1/forecast", json={"ticker": "KO", "as_of": "2023-11-15", "adapter": "fingpt-deepseek@v1"}
        )
    assert r.status_code == 200, r.text
    assert r.json()["as_of"] == "2023-11-12"
    assert r.json()["adapter"] == "fingpt-deepseek@v1"
    assert r.json()["arm"] == "direct"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"ticker": "ZZZZ"}, 404, "unknown_ticker"),
        ({"ticker": "AMZN", "as_of": "2023-12-01"}, 404, "unknown_ticker"),  # joined 2024-02-26
        ({"ticker": "AAPL", "as_of": "2024-03-01"}, 422, "future_date"),
        ({"ticker": "AAPL", "as_of": "2019-01-01"}, 422, "no_data"),  # before index coverage
        ({"ticker": "AAPL", "as_of": "2021-06-01"}, 422, "no_data"),  # before news coverage
        ({"ticker": "AAPL", "adapter": "nope"}, 404, "adapter_not_loaded"),
        ({"ticker": "AAPL", "adapter": "../etc"}, 422, "invalid_request"),
        ({"ticker": ""}, 422, "invalid_request"),
        ({"ticker": "AAPL", "as_of": "yesterday"}, 422, "invalid_request"),
        ({"ticker": "AAPL", "extra": 1}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
    ],
)
async def test_bad_input_is_a_clear_4xx(serve: Any, body: dict[str, Any], status: int, code: str) -> None:
    async with serve() as client:
        r = await client.post("/v1/forecast", json=body)
    assert r.status_code == status, r.text
    assert error_of(r)["code"] == code


async def test_malformed_and_oversized_bodies(serve: Any) -> None:
    async with serve(max_body_bytes=2048) as client:
        bad_json = await client.post(
            "/v1/forecast", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        wrong_type = await client.post("/v1/forecast", content=b"ticker=AAPL",
                                       headers={"Content-Type": "text/plain"})
        huge = await client.post("/v1/forecast", json={"ticker": "A" * 5000})
        missing = await client.get("/v1/nothing-here")
    assert bad_json.status_code == 422 and error_of(bad_json)["code"] == "invalid_request"
    assert wrong_type.status_code == 422 and error_of(wrong_type)
    assert huge.status_code == 413 and error_of(huge)["code"] == "payload_too_large"
    assert missing.status_code == 404 and error_of(missing)["type"] == "not_found_error"


async def test_batch_defaults_to_the_dow30_of_the_date(serve: Any) -> None:
    async with serve() as client:
        r = await client.post("/v1/forecast/batch", json={"as_of": "2023-12-31"})
    assert r.status_code == 200, r.text
    body = r.json()
    tickers = {f["ticker"] for f in body["forecasts"]} | {e["ticker"] for e in body["errors"]}
    assert len(tickers) == 30 and "WBA" in tickers and "AMZN" not in tickers
    assert body["errors"] == [] and len(body["forecasts"]) == 30  # every one answered
    assert all(f["prediction"] is not None for f in body["forecasts"])


async def test_batch_reports_per_ticker_errors(serve: Any) -> None:
    async with serve() as client:
        r = await client.post("/v1/forecast/batch", json={"tickers": ["AAPL", "ZZZZ", "KO"]})
    body = r.json()
    assert r.status_code == 200
    assert sorted(f["ticker"] for f in body["forecasts"]) == ["AAPL", "KO"]
    assert body["errors"] == [
        {"ticker": "ZZZZ", "type": "not_found_error", "message": body["errors"][0]["message"],
         "code": "unknown_ticker"}
    ]


async def test_stream_sends_tokens_then_the_result(serve: Any) -> None:
    async with serve() as client:
        r = await client.post("/v1/forecast", json={"ticker": "MSFT", "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    names = [e for e, _ in events]
    assert names[-1] == "result" and set(names[:-1]) == {"token"}
    text = "".join(json.loads(d)["text"] for e, d in events if e == "token")
    assert json.loads(events[-1][1])["raw_text"] == text


async def test_stream_errors_before_streaming_are_plain_4xx(serve: Any) -> None:
    async with serve() as client:
        r = await client.post("/v1/forecast", json={"ticker": "ZZZZ", "stream": True})
    assert r.status_code == 404 and error_of(r)["code"] == "unknown_ticker"


async def test_health_ready_and_metrics(serve: Any, engines: Any) -> None:
    async with serve() as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        await client.post("/v1/forecast", json={"ticker": "AAPL", "adapter": "fingpt-llama"})
        metrics = (await client.get("/metrics")).text
        engines["deepseek"].dead = True
        not_ready = await client.get("/readyz")
    assert not_ready.status_code == 503 and error_of(not_ready)["code"] == "not_ready"
    assert "Retry-After" in not_ready.headers
    assert 'forecast_forecasts_total{adapter="fingpt-llama",arm="direct",version="v1"} 1.0' in metrics
    assert "forecast_engine_running_requests" in metrics
    assert "forecast_time_to_first_token_seconds_bucket" in metrics
    assert "ticker" not in metrics


async def test_openapi_lists_every_route(serve: Any) -> None:
    async with serve() as client:
        paths = set((await client.get("/openapi.json")).json()["paths"])
    assert {"/v1/forecast", "/v1/forecast/batch", "/v1/adapters", "/v1/adapters/promote",
            "/v1/routing", "/v1/adapters/{name}/scorecard", "/healthz", "/readyz",
            "/v1/universe", "/v1/page/adapters"} <= paths


class StaleNewsMarket:
    """The snapshot, with news served stale from a cache that counts its answers."""

    def __init__(self, inner: Any) -> None:
        self.prices = self.profiles = self.financials = inner
        self.news = self
        self._inner = inner
        self.hits, self.misses, self.stale_serves = 5, 2, 0

    def company_news(self, ticker: str, start: Any, end: Any) -> Any:
        from forecast.types import Fetched

        self.stale_serves += 1
        fresh = self._inner.company_news(ticker, start, end)
        return Fetched(fresh.value, source="cache", stale=True, error="provider down")


async def test_stale_data_is_flagged_and_counted(serve: Any, market: Any) -> None:
    async with serve(data=StaleNewsMarket(market)) as client:
        body = (await client.post("/v1/forecast", json={"ticker": "KO"})).json()
        metrics = (await client.get("/metrics")).text
    assert body["freshness"]["stale"] is True
    assert body["freshness"]["stale_sources"] == ["news"]
    assert body["freshness"]["sources"]["news"] == "cache"
    assert 'forecast_stale_forecasts_total{source="news"} 1.0' in metrics
    assert "forecast_provider_cache_hits_total 5.0" in metrics
    assert "forecast_provider_cache_stale_serves_total 1.0" in metrics
