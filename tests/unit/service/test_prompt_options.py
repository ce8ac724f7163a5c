"""Per-request prompt options (``weeks``, ``news_per_week``, ``with_financials``): they shape
the prompt the engine gets, are stored in the forecast log and hashed with the prompt; bad or
too-long options are refused (422, the one error shape) before any data is fetched, with
nothing generated and nothing logged."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from forecast.providers.snapshot import SnapshotMarketData
from forecast.windows import WindowConfig
from service.engine import Chunk, GenerationParams, LoraRef
from service.forecast_log import ForecastLog, ForecastRow, new_id, prompt_hash
from service.prompt_options import within
from service.settings import EngineSettings
from service.testing import FakeEngine, error_of

WEEK_HEAD = re.compile(r"'s stock price (?:increased|decreased) from ")
HEADLINE = "[Headline]:"
FINANCIALS = "Some recent basic financials of"
OPTIONS = ("weeks", "news_per_week", "with_financials")


class RecordingEngine(FakeEngine):
    """A FakeEngine that keeps every prompt it was asked to complete."""

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.prompts: list[str] = []

    async def generate(
        self, prompt: str, params: GenerationParams, lora: LoraRef | None, request_id: str
    ) -> AsyncIterator[Chunk]:
        self.prompts.append(prompt)
        async for chunk in super().generate(prompt, params, lora, request_id):
            yield chunk


class Counting:
    """A provider that counts the calls made to it."""

    def __init__(self, inner: Any, calls: list[str]) -> None:
        self._inner, self._calls = inner, calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls.append(name)
            return attr(*args, **kwargs)

        return call


class CountingMarket:
    """The bundled snapshot, with every provider call counted in ``calls``."""

    def __init__(self, market: SnapshotMarketData) -> None:
        self.calls: list[str] = []
        self.prices = Counting(market.prices, self.calls)
        self.news = Counting(market.news, self.calls)
        self.profiles = Counting(market.profiles, self.calls)
        self.financials = Counting(market.financials, self.calls)


class CharTokens:
    """About four characters a token: enough to hold prompts against a context length."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [0] * (len(text) // 4)


@pytest.fixture
def engines() -> dict[str, FakeEngine]:
    return {"llama": RecordingEngine("llama"), "deepseek": RecordingEngine("deepseek")}


def no_tokenizer(spec: EngineSettings) -> Any:
    raise AssertionError(f"no prompt should need measuring here (asked for {spec.base})")


async def forecast(client: Any, **options: Any) -> dict[str, Any]:
    r = await client.post("/v1/forecast", json={"ticker": "AAPL", "adapter": "fingpt-llama", **options})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# --- the prompt ---------------------------------------------------------------------------


async def test_options_shape_the_prompt_the_engine_gets(serve: Any, engines: Any) -> None:
    async with serve(tokenizer_for=no_tokenizer) as client:  # settings: 2 weeks, 2 news, financials
        default = await forecast(client)
        short = await forecast(client, weeks=1, news_per_week=0, with_financials=False)
    full, small = engines["llama"].prompts
    assert len(WEEK_HEAD.findall(full)) == 2
    assert 0 < full.count(HEADLINE) <= 4 and FINANCIALS in full
    assert len(WEEK_HEAD.findall(small)) == 1
    assert HEADLINE not in small and FINANCIALS not in small
    assert default["options"] == {"weeks": 2, "news_per_week": 2, "with_financials": True}
    assert short["options"] == {"weeks": 1, "news_per_week": 0, "with_financials": False}


async def test_batch_options_apply_to_every_ticker(serve: Any, engines: Any) -> None:
    async with serve(tokenizer_for=no_tokenizer) as client:
        r = await client.post(
            "/v1/forecast/batch",
            json={"tickers": ["AAPL", "KO"], "adapter": "fingpt-llama", "weeks": 1, "with_financials": False},
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["forecasts"]) == 2 and body["errors"] == []
    assert all(f["options"] == {"weeks": 1, "news_per_week": 2, "with_financials": False} for f in body["forecasts"])
    prompts = engines["llama"].prompts
    assert len(prompts) == 2
    assert all(len(WEEK_HEAD.findall(p)) == 1 and FINANCIALS not in p for p in prompts)


# --- the log and the hash -----------------------------------------------------------------


async def test_the_log_stores_the_options_and_hashes_them(serve: Any) -> None:
    async with serve(tokenizer_for=no_tokenizer) as client:
        a = await forecast(client, weeks=1)
        b = await forecast(client, weeks=1, with_financials=False)
        c = await forecast(client, weeks=1)
        d = await forecast(client)
        log = client.app.state.service.forecast_log
    ra, rb, rc, rd = (log.get(f["id"]) for f in (a, b, c, d))
    assert (ra.weeks, ra.news_per_week, ra.with_financials) == (1, 2, True)
    assert (rb.weeks, rb.news_per_week, rb.with_financials) == (1, 2, False)
    assert (rd.weeks, rd.news_per_week, rd.with_financials) == (2, 2, True)  # the settings'
    assert ra.prompt_hash == rc.prompt_hash
    assert len({ra.prompt_hash, rb.prompt_hash, rd.prompt_hash}) == 3


def test_the_hash_tells_option_sets_apart_even_for_the_same_text() -> None:
    """A ticker with no financials reported builds the same text with and without them."""
    base = WindowConfig(weeks=2, news_per_week=2, with_financials=True)
    hashes = {
        prompt_hash("same text", w)
        for w in (base, dataclasses.replace(base, with_financials=False),
                  dataclasses.replace(base, weeks=1), dataclasses.replace(base, news_per_week=1))
    }
    assert len(hashes) == 4
    assert prompt_hash("same text", base) == prompt_hash("same text", WindowConfig(2, 2, True))
    assert prompt_hash("other text", base) not in hashes


def test_an_older_log_file_gains_the_option_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    old = create_engine(url)
    with old.begin() as conn:  # the table as it was before the options existed, with one row
        columns = [c for c in ForecastRow.__table__.columns if c.name not in OPTIONS]
        conn.execute(text(
            "CREATE TABLE forecasts ("
            + ", ".join(f"{c.name} {c.type.compile(dialect=old.dialect)}" for c in columns) + ")"
        ))
        conn.execute(text(
            "INSERT INTO forecasts (id, created_at, route, ticker, as_of, target_end, adapter, "
            "version, base, base_model, arm, shadow, prompt_hash, raw_text, stale_sources, "
            "generated_tokens) VALUES ('old', '2024-01-01 00:00:00', 'api', 'KO', '2023-12-31', "
            "'2024-01-07', 'a', 'v1', 'llama', 'm', 'direct', 0, :h, '', '', 0)"
        ), {"h": "0" * 64})
    old.dispose()
    log = ForecastLog(url)
    assert set(OPTIONS) <= {c["name"] for c in inspect(log.engine).get_columns("forecasts")}
    log.add(_row(weeks=1, news_per_week=0, with_financials=False))
    assert log.count() == 2
    before = log.get("old")
    assert before is not None and (before.weeks, before.news_per_week, before.with_financials) == (None, None, None)
    assert len(log.scorecards("a")) == 2  # the version's card and the adapter's
    log.close()


def _row(**options: Any) -> ForecastRow:
    return ForecastRow(
        id=new_id(), created_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC), route="api", ticker="KO",
        as_of=dt.date(2023, 12, 31), target_end=dt.date(2024, 1, 7), adapter="a", version="v1",
        base="llama", base_model="m", arm="direct", shadow=False, prompt_hash="1" * 64, raw_text="",
        stale_sources="", generated_tokens=0, **options,
    )


# --- refused before anything happens ------------------------------------------------------


@pytest.mark.parametrize("route", ["/v1/forecast", "/v1/forecast/batch", "stream"])
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"weeks": 0}, "weeks"),
        ({"weeks": 5}, "weeks"),
        ({"weeks": "2"}, "weeks"),  # strictly typed: JSON numbers and booleans only
        ({"weeks": 2.5}, "weeks"),
        ({"news_per_week": 6}, "news_per_week"),
        ({"news_per_week": -1}, "news_per_week"),
        ({"with_financials": "maybe"}, "with_financials"),
        ({"with_financials": 1}, "with_financials"),
    ],
)
async def test_bad_options_are_refused_before_any_work(
    serve: Any, engines: Any, market: Any, route: str, options: dict[str, Any], field: str
) -> None:
    counting = CountingMarket(market)
    if route == "/v1/forecast/batch":
        path, body = route, {"tickers": ["AAPL", "KO"], **options}
    else:
        path, body = "/v1/forecast", {"ticker": "AAPL", "stream": route == "stream", **options}
    async with serve(data=counting, tokenizer_for=no_tokenizer) as client:
        fetched = len(counting.calls)
        r = await client.post(path, json=body)
        log = client.app.state.service.forecast_log
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/json")
        error = error_of(r)
        assert error["code"] == "invalid_request" and field in error["message"]
        assert log.count() == 0
    assert len(counting.calls) == fetched
    assert engines["llama"].prompts == engines["deepseek"].prompts == []


SMALL_CONTEXT = [{"base": "llama", "max_model_len": 4096}, {"base": "deepseek", "max_model_len": 4096}]


async def test_options_too_long_for_the_context_are_refused(
    serve: Any, engines: Any, market: Any
) -> None:
    """Settings of 1 week, no news, no financials, on a 4,096-token context: four weeks of
    five headlines with financials cannot fit; two weeks of three can; the settings' own
    window (or less) is never measured."""
    loads: list[str] = []

    def tokenizer_for(spec: EngineSettings) -> CharTokens:
        loads.append(spec.base)
        return CharTokens()

    counting = CountingMarket(market)
    settings = {"engines": SMALL_CONTEXT, "weeks": 1, "news_per_week": 0, "with_financials": False}
    too_long = {"weeks": 4, "news_per_week": 5, "with_financials": True}
    async with serve(data=counting, tokenizer_for=tokenizer_for, **settings) as client:
        log = client.app.state.service.forecast_log
        fetched = len(counting.calls)
        one = await client.post("/v1/forecast", json={"ticker": "AAPL", **too_long})
        many = await client.post("/v1/forecast/batch", json={"tickers": ["AAPL"], **too_long})
        streamed = await client.post("/v1/forecast", json={"ticker": "AAPL", "stream": True, **too_long})
        assert len(counting.calls) == fetched and log.count() == 0
        assert engines["llama"].prompts == engines["deepseek"].prompts == []
        assert loads == ["llama"]  # one tokenizer (both engines run the same model), loaded once
        same = await forecast(client)  # the settings' window: never measured
        larger = await forecast(client, weeks=2, news_per_week=3, with_financials=True)
        assert log.count() == 2
    for r in (one, many, streamed):
        assert r.status_code == 422, r.text
        error = error_of(r)
        assert error["code"] == "prompt_too_long"
        assert "weeks=4, news_per_week=5" in error["message"] and "4096" in error["message"]
    assert same["options"] == {"weeks": 1, "news_per_week": 0, "with_financials": False}
    assert larger["options"] == {"weeks": 2, "news_per_week": 3, "with_financials": True}
    assert len(WEEK_HEAD.findall(engines["llama"].prompts[-1])) == 2


@pytest.mark.parametrize(
    ("window", "fits"),
    [
        (WindowConfig(2, 2, True), True),
        (WindowConfig(1, 0, False), True),
        (WindowConfig(3, 2, True), False),
        (WindowConfig(2, 3, True), False),
        (WindowConfig(2, 2, True, with_indicators=True), False),
    ],
)
def test_within_the_checked_window(window: WindowConfig, fits: bool) -> None:
    assert within(window, WindowConfig(2, 2, True)) is fits
    assert within(WindowConfig(1, 1, True), WindowConfig(1, 1, False)) is False
