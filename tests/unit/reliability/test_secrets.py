"""Secrets never reach a log line or an answer: the admin token (right, wrong, half-right),
and the Finnhub key of the live data stack as ``market_data_from_settings`` wires it, while a
fake Finnhub quotes the key back in every failure (URL with ``token=``, error bodies).
Also: every token attempt goes through ``hmac.compare_digest``, whatever its length."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from forecast.providers.live import Backoff, TokenBucket
from forecast.providers.snapshot import SnapshotMarketData
from forecast.settings import DataSettings, market_data_from_settings
from service import deps
from service.testing import error_of

KEY = "fh-live-SECRET-key-c0ffee42"


class KeyQuotingFinnhub(BaseAdapter):
    """Finnhub's HTTP side, failing in ``mode`` and quoting the API key back each time."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.urls: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        url = str(request.url)
        self.urls.append(url)
        if self.mode == "down":
            raise requests.ConnectionError(f"Max retries exceeded with url: {url}")
        status = {"401": 401, "429": 429, "500": 500}[self.mode]
        response = requests.Response()
        response.status_code = status
        response._content = f'{{"error": "key {KEY} refused at {url}"}}'.encode()
        response.headers["Content-Type"] = "application/json"
        response.url, response.request, response.encoding = url, request, "utf-8"
        return response

    def close(self) -> None:
        """Nothing to release."""


def live_market(tmp_path: Path, mode: str) -> tuple[Any, KeyQuotingFinnhub]:
    """The production live stack (cache + Finnhub) with Finnhub's HTTP faked and the
    snapshot for prices (no Yahoo from a unit test)."""
    settings = DataSettings(
        data_source="live", finnhub_api_key=KEY, cache_path=tmp_path / "cache.sqlite3"
    )
    assert KEY not in repr(settings) and KEY not in settings.model_dump_json()
    market: Any = market_data_from_settings(settings)
    finnhub = market.live.news
    transport = KeyQuotingFinnhub(mode)
    finnhub.client._session.mount("https://", transport)
    finnhub.client._session.mount("http://", transport)
    finnhub.backoff = Backoff(retries=1, base_seconds=0.0)
    finnhub.sleep = lambda _: None
    finnhub.limiter = TokenBucket(rate_per_minute=60_000, sleep=lambda _: None)
    market.live.prices = SnapshotMarketData()
    return market, transport


@pytest.mark.parametrize("mode", ["down", "401", "429", "500"])
async def test_the_finnhub_key_is_in_no_answer_and_no_log(
    serve: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    caplog.set_level(logging.DEBUG)
    market, finnhub = live_market(tmp_path, mode)
    async with serve(data=market) as client:
        answers = [
            await client.post("/v1/forecast", json={"ticker": "KO"}),
            await client.post("/v1/forecast", json={"ticker": "KO", "stream": True}),
            await client.post("/v1/forecast/batch", json={"tickers": ["KO", "MSFT"]}),
        ]
        metrics = await client.get("/metrics")
    assert any(KEY in url for url in finnhub.urls)  # the key really went out, and came back
    assert answers[0].status_code == 503 and error_of(answers[0])["code"].startswith("provider_")
    for r in [*answers, metrics]:
        assert KEY not in r.text and KEY not in str(r.headers)
    assert KEY not in caplog.text
    assert caplog.records  # the failures were logged, masked


async def test_the_admin_token_is_in_no_answer_and_no_log(
    serve: Any, token: str, admin: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    attempts = [token[:-1], token + "x", token.upper(), f"{token} {token}", ""]
    async with serve() as client:
        answers = []
        for bad in attempts:
            for path in ("/v1/adapters", "/v1/routing"):
                answers.append(await client.get(path, headers={"Authorization": f"Bearer {bad}"}))
        answers.append(await client.get("/v1/adapters", headers={"Authorization": f"Basic {token}"}))
        answers.append(await client.get("/v1/adapters", headers={"Authorization": token}))
        answers += [
            await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2"}, headers=admin),
            await client.post("/v1/adapters", json={"name": "nope"}, headers=admin),
            await client.put("/v1/routing", json={"arms": [{"name": "a", "adapter": "x", "weight": 1}]}, headers=admin),
            await client.post("/v1/forecast", json={"ticker": "ZZZZ"}, headers=admin),
            await client.get("/readyz"), await client.get("/metrics"), await client.get("/openapi.json"),
        ]
        settings_repr = repr(client.app.state.service.settings)  # type: ignore[attr-defined]
    assert [r.status_code for r in answers[:10]] == [401] * 10
    for r in answers:
        assert token not in r.text and token not in str(r.headers)
        for bad in attempts[:4]:
            assert bad not in r.text  # a near-miss is not echoed either
    assert token not in caplog.text and token not in settings_repr


async def test_every_token_attempt_is_compared_in_constant_time(
    serve: Any, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(deps.hmac, "compare_digest", spy)
    tries = ["x", token[:5], token[:-1], token + "0" * 100, token]
    async with serve() as client:
        statuses = [
            (await client.get("/v1/adapters", headers={"Authorization": f"Bearer {t}"})).status_code
            for t in tries
        ]
    assert statuses == [401, 401, 401, 401, 200]
    assert compared == [(t.encode(), token.encode()) for t in tries]  # no length shortcut
