"""The SDK against the real service app (FakeEngine, bundled snapshot) over loopback HTTP."""

from __future__ import annotations

import pytest
from client_harness import ADMIN_TOKEN, FakeService

from clients.errors import (
    AuthenticationError,
    NotFoundError,
    UnprocessableEntityError,
)
from clients.models import BatchItemError, Forecast, PromptOptions
from clients.sdk import AsyncClient, Client, _Endpoints

V1 = {"fingpt-llama@v1", "fingpt-deepseek@v1"}


def test_forecast_is_typed_and_names_its_arm_and_adapter(fake_service: FakeService) -> None:
    with Client(fake_service.url) as c:
        f = c.forecast("aapl", client_key="alice")
    assert f.ticker == "AAPL" and f.company
    assert f.adapter in V1 and f.arm in {"fingpt-llama", "fingpt-deepseek"}
    assert f.prediction is not None and f.prediction.bin[0] in "UD"
    assert f.week_start is not None and f.week_end is not None
    assert (f.week_end - f.week_start).days == 7
    assert f.latency.total_s is not None and f.latency.ttft_s is not None
    assert f.generated_tokens and f.raw_text and "[Positive Developments]" in f.raw_text


def test_same_client_key_sticks_to_one_arm(fake_service: FakeService) -> None:
    with Client(fake_service.url) as c:
        arms = {c.forecast("KO", client_key="bob").arm for _ in range(4)}
        many = {c.forecast("KO", client_key=f"user-{i}").arm for i in range(24)}
    assert len(arms) == 1
    assert many == {"fingpt-llama", "fingpt-deepseek"}  # 24 keys: both arms (p miss = 2^-23)


def test_stream_tokens_then_result(fake_service: FakeService) -> None:
    with Client(fake_service.url) as c:
        stream = c.stream_forecast("MSFT", adapter="fingpt-llama")
        text = "".join(stream.tokens())
        result = stream.result
    assert result.adapter == "fingpt-llama@v1"
    assert text == result.raw_text
    assert stream.state.tokens == result.generated_tokens
    assert stream.ttft_s is not None


def test_batch_json_and_streamed(fake_service: FakeService) -> None:
    with Client(fake_service.url) as c:
        batch = c.batch(["AAPL", "KO", "ZZZZ"], adapter="fingpt-deepseek")
        streamed = list(c.stream_batch(["AAPL", "MSFT", "ZZZZ"]))
    assert sorted(f.ticker for f in batch.forecasts) == ["AAPL", "KO"]
    assert [(e.ticker, e.code) for e in batch.errors] == [("ZZZZ", "unknown_ticker")]
    assert {f.adapter for f in batch.forecasts} == {"fingpt-deepseek@v1"}
    assert sorted(i.ticker for i in streamed if isinstance(i, Forecast)) == ["AAPL", "MSFT"]
    assert [i.ticker for i in streamed if isinstance(i, BatchItemError)] == ["ZZZZ"]


def test_client_errors_are_typed(fake_service: FakeService) -> None:
    with Client(fake_service.url) as c:
        with pytest.raises(NotFoundError) as unknown:
            c.forecast("ZZZZ")
        with pytest.raises(UnprocessableEntityError):
            c.forecast("not a ticker!")
        with pytest.raises(NotFoundError):
            c.forecast("AAPL", adapter="no-such-adapter")
        with pytest.raises(AuthenticationError):
            c.list_adapters()  # no token
    assert unknown.value.code == "unknown_ticker"
    with (
        Client(fake_service.url, admin_token="wrong") as c,
        pytest.raises(AuthenticationError) as bad,
    ):
        c.list_adapters()
    assert "wrong" not in str(bad.value)


def test_hot_swap_promote_and_unload(fake_service: FakeService) -> None:
    with Client(fake_service.url, admin_token=ADMIN_TOKEN) as c:
        before = c.list_adapters()
        assert before.aliases["fingpt-llama"] == "fingpt-llama@v1"
        assert before.available["fingpt-llama"] == ["v1", "v2"]

        swapped = c.load_adapter("fingpt-llama", "v2")  # load + promote = hot-swap
        assert swapped.ref == "fingpt-llama@v2" and swapped.aliases == ["fingpt-llama"]
        assert c.forecast("AAPL", adapter="fingpt-llama").adapter == "fingpt-llama@v2"

        staged = c.load_adapter("fingpt-llama", "v1", promote=False)  # loaded, serves nothing
        assert staged.aliases == []
        assert c.promote_adapter("canary", "fingpt-llama@v1").aliases == ["canary"]
        assert c.forecast("AAPL", adapter="canary").adapter == "fingpt-llama@v1"
        assert c.list_adapters().aliases == {
            "fingpt-llama": "fingpt-llama@v2",
            "fingpt-deepseek": "fingpt-deepseek@v1",
            "canary": "fingpt-llama@v1",
        }
        with pytest.raises(NotFoundError):
            c.unload_adapter("fingpt-llama", "v9")


def test_unload_a_version_no_alias_serves(fake_service: FakeService) -> None:
    with Client(fake_service.url, admin_token=ADMIN_TOKEN) as c:
        staged = c.load_adapter("fingpt-llama", "v2", promote=False)
        assert staged.lora_id in fake_service.engines["llama"].loras
        gone = c.unload_adapter("fingpt-llama", "v2")
        listing = c.list_adapters()
        with pytest.raises(NotFoundError):
            c.forecast("AAPL", adapter="fingpt-llama@v2")
    assert (gone.ref, gone.loaded) == ("fingpt-llama@v2", False)
    assert staged.lora_id not in fake_service.engines["llama"].loras
    assert [a.version for a in listing.adapters if a.name == "fingpt-llama"] == ["v1"]


def test_reweight_keeps_arm_names_and_moves_traffic(fake_service: FakeService) -> None:
    with Client(fake_service.url, admin_token=ADMIN_TOKEN) as c:
        routing = c.reweight({"fingpt-llama": 1.0, "fingpt-deepseek": 0.0})
        assert {a.name: a.share for a in routing.arms} == {
            "fingpt-llama": 1.0,
            "fingpt-deepseek": 0.0,
        }
        arms = {c.forecast("KO", client_key=f"k{i}").arm for i in range(8)}
        assert arms == {"fingpt-llama"}
        with pytest.raises(UnprocessableEntityError) as bad:
            c.reweight({"no-such-alias": 1.0})
        assert bad.value.code == "unknown_alias"
        assert c.routing().version == routing.version


def test_scorecard_health_and_metrics(fake_service: FakeService) -> None:
    with Client(fake_service.url, admin_token=ADMIN_TOKEN) as c:
        c.forecast("AAPL", adapter="fingpt-llama")
        card = c.scorecard("fingpt-llama")
        assert card.overall is not None and card.overall.forecasts >= 1
        assert [v.version for v in card.versions] == ["v1"]
        # the week of 2023-12-29 closed long ago (the service's clock is the real one)
        assert c.score_now() == 1
        assert c.score_now() == 0  # nothing left to score
        with pytest.raises(NotFoundError):
            c.scorecard("nobody")
        assert c.healthz()["status"] == "ok"
        assert c.readyz()["status"] == "ready"
        text = c.metrics()
    assert 'forecast_forecasts_total{adapter="fingpt-llama",arm="direct",version="v1"} 1.0' in text


async def test_async_client_forecast_stream_and_batch(fake_service: FakeService) -> None:
    async with AsyncClient(fake_service.url, admin_token=ADMIN_TOKEN) as c:
        f = await c.forecast("AAPL", client_key="carol")
        stream = await c.stream_forecast("AAPL", client_key="carol")
        pieces = [p async for p in stream.tokens()]
        result = await stream.collect()
        items = [i async for i in c.stream_batch(["KO", "MSFT"])]
        adapters = await c.list_adapters()
    assert result.arm == f.arm  # sticky across the two calls
    assert "".join(pieces) == result.raw_text
    assert sorted(i.ticker for i in items) == ["KO", "MSFT"]
    assert set(adapters.aliases) == {"fingpt-llama", "fingpt-deepseek"}


def test_prompt_options_reach_the_service_and_come_back(fake_service: FakeService) -> None:
    short = PromptOptions(weeks=1, news_per_week=3, with_financials=False)
    with Client(fake_service.url) as c:
        f = c.forecast("AAPL", options=short)
        default = c.forecast("AAPL")
        batch = c.batch(["KO", "MSFT"], options=PromptOptions(weeks=2))
        streamed = c.stream_forecast("KO", options=short).result
        with pytest.raises(UnprocessableEntityError) as refused:
            c.forecast("AAPL", options=PromptOptions(weeks=5))
    assert f.options == streamed.options == short
    assert default.options == PromptOptions(weeks=4, news_per_week=5, with_financials=True)  # settings
    assert {x.options for x in batch.forecasts} == {PromptOptions(weeks=2, news_per_week=5, with_financials=True)}
    assert refused.value.status_code == 422 and "weeks" in str(refused.value)


async def test_async_client_takes_prompt_options(fake_service: FakeService) -> None:
    async with AsyncClient(fake_service.url) as c:
        f = await c.forecast("AAPL", options=PromptOptions(with_financials=False))
        items = [i async for i in c.stream_batch(["KO"], options=PromptOptions(news_per_week=0))]
    assert f.options is not None and f.options.with_financials is False
    assert isinstance(items[0], Forecast) and items[0].options is not None
    assert items[0].options.news_per_week == 0


def test_options_left_unset_are_not_sent() -> None:
    call = _Endpoints.forecast("AAPL", None, None, False, None, PromptOptions(weeks=2))
    assert call.json == {"ticker": "AAPL", "weeks": 2}
    assert _Endpoints.batch(None, None, None, None).json == {}
    falsy = _Endpoints.batch_stream(["KO"], None, None, None, PromptOptions(news_per_week=0, with_financials=False))
    assert falsy.json == {"tickers": ["KO"], "stream": True, "news_per_week": 0, "with_financials": False}
