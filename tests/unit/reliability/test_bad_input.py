"""Bad input is refused with a clear 4xx in the one error shape, and leaves no trace: no
forecast logged, no forecast counted, no adapter loaded. (tests/unit/service checks each
input's status and code on the plain route; here every input also goes through the streamed
and batch routes, and the log is counted before and after.)"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from reliability_harness import logged_forecasts

from service.manifest import MANIFEST, WEIGHTS
from service.testing import error_of, write_stub_adapter

BAD_FORECASTS = [
    ({"ticker": "ZZZZ"}, 404, "unknown_ticker"),
    ({"ticker": "AMZN", "as_of": "2023-12-01"}, 404, "unknown_ticker"),  # joined 2024-02-26
    ({"ticker": "AAPL", "as_of": "2024-03-01"}, 422, "future_date"),
    ({"ticker": "AAPL", "as_of": "2019-01-01"}, 422, "no_data"),  # before the data
    ({"ticker": "AAPL", "adapter": "../etc"}, 422, "invalid_request"),
    ({"ticker": "AAPL", "adapter": "/etc/passwd"}, 422, "invalid_request"),
    ({"ticker": "AAPL", "adapter": "fingpt-llama@../../v1"}, 422, "invalid_request"),
    ({"ticker": "AAPL", "adapter": "nope"}, 404, "adapter_not_loaded"),
    ({"ticker": "AAPL'; DROP TABLE forecasts;--"}, 422, "invalid_request"),
    ({"ticker": 7}, 422, "invalid_request"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_FORECASTS)
@pytest.mark.parametrize("stream", [False, True])
async def test_bad_forecast_requests_log_nothing(
    serve: Any, body: dict[str, Any], status: int, code: str, stream: bool
) -> None:
    async with serve() as client:
        r = await client.post("/v1/forecast", json={**body, "stream": stream})
        rows = logged_forecasts(client)
        metrics = (await client.get("/metrics")).text
    assert r.status_code == status, r.text
    assert error_of(r)["code"] == code
    assert rows == 0
    assert "forecast_forecasts_total{" not in metrics


async def test_a_delisted_ticker_is_404_after_it_left_the_index(serve: Any) -> None:
    later = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
    async with serve(now=later) as client:
        r = await client.post("/v1/forecast", json={"ticker": "WBA", "as_of": "2024-05-01"})
        rows = logged_forecasts(client)
    assert r.status_code == 404 and error_of(r)["code"] == "unknown_ticker"  # left 2024-02-26
    assert rows == 0


async def test_a_batch_of_bad_tickers_logs_only_the_good_ones(serve: Any) -> None:
    async with serve() as client:
        r = await client.post("/v1/forecast/batch", json={"tickers": ["KO", "ZZZZ", "AMZN"]})
        rows = logged_forecasts(client)
        bad_date = await client.post("/v1/forecast/batch", json={"tickers": ["KO"], "as_of": "2030-01-01"})
        rows_after = logged_forecasts(client)
    assert r.status_code == 200
    assert [e["code"] for e in r.json()["errors"]] == ["unknown_ticker", "unknown_ticker"]
    assert rows == 1
    assert bad_date.status_code == 422 and error_of(bad_date)["code"] == "future_date"
    assert rows_after == 1


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/xml", "application/octet-stream"],
)
async def test_a_json_body_under_the_wrong_content_type_is_422(serve: Any, content_type: str) -> None:
    async with serve() as client:
        r = await client.post(
            "/v1/forecast", content=b'{"ticker": "KO"}', headers={"Content-Type": content_type}
        )
        rows = logged_forecasts(client)
    assert r.status_code == 422, r.text
    assert error_of(r)["type"] == "invalid_request_error"
    assert rows == 0


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
async def test_json_content_types_are_accepted(serve: Any, content_type: str) -> None:
    async with serve() as client:
        r = await client.post(
            "/v1/forecast", content=b'{"ticker": "KO"}', headers={"Content-Type": content_type}
        )
        rows = logged_forecasts(client)
    assert r.status_code == 200, r.text
    assert rows == 1


@pytest.mark.parametrize(
    "body", [b"\xff\xfe{not utf-8", b"[1, 2, 3]", b'"KO"', b"null", b'{"ticker": "KO"'],
)
async def test_malformed_json_is_a_4xx_in_the_error_shape(serve: Any, body: bytes) -> None:
    async with serve() as client:
        r = await client.post("/v1/forecast", content=body, headers={"Content-Type": "application/json"})
        rows = logged_forecasts(client)
    assert r.status_code in (400, 422), r.text
    assert error_of(r)["type"] == "invalid_request_error"
    assert rows == 0


async def test_oversized_bodies_are_413_with_or_without_a_length(serve: Any) -> None:
    big = b'{"ticker": "KO", "adapter": "' + b"a" * 4096 + b'"}'

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    async with serve(max_body_bytes=2048) as client:
        with_length = await client.post("/v1/forecast", content=big, headers={"Content-Type": "application/json"})
        streamed = await client.post("/v1/forecast", content=chunked(), headers={"Content-Type": "application/json"})
        lying = await client.post(
            "/v1/forecast", content=b'{"ticker": "KO"}',
            headers={"Content-Type": "application/json", "Content-Length": "99999999"},
        )
        rows = logged_forecasts(client)
    for r in (with_length, streamed):
        assert r.status_code == 413, r.text
        assert error_of(r)["code"] == "payload_too_large"
    assert lying.status_code == 413  # refused on the declared length, body never read
    assert rows == 0


def damage_base_model(root: Path) -> None:
    path = root / "fingpt-llama" / "v2" / MANIFEST
    path.write_text(path.read_text().replace("SmolLM2-135M-Instruct", "Llama-3.1-8B-Instruct"))


BAD_ADAPTER_CALLS = [
    ("POST", "/v1/adapters", {"name": "../fingpt-llama"}, 422),
    ("POST", "/v1/adapters", {"name": "/etc/passwd"}, 422),
    ("POST", "/v1/adapters", {"name": "fingpt-llama", "version": "../../v1"}, 422),
    ("POST", "/v1/adapters", {"name": "fingpt-llama", "alias": "../x"}, 422),
    ("POST", "/v1/adapters/promote", {"alias": "../x", "adapter": "fingpt-llama@v1"}, 422),
    ("POST", "/v1/adapters/promote", {"alias": "x", "adapter": "/etc/passwd"}, 422),
    ("DELETE", "/v1/adapters/..%2F..%2Fetc/versions/v1", None, 404),
    ("DELETE", "/v1/adapters/fingpt-llama/versions/..%2Fv1", None, 404),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), BAD_ADAPTER_CALLS)
async def test_adapter_paths_outside_the_root_load_nothing(
    serve: Any, admin: dict[str, str], engines: Any, method: str, path: str, body: Any, status: int
) -> None:
    async with serve() as client:
        state = client.app.state.service  # type: ignore[attr-defined]
        before = ({b: set(e.loras) for b, e in engines.items()}, state.registry.aliases)
        r = await client.request(method, path, json=body, headers=admin)
        after = ({b: set(e.loras) for b, e in engines.items()}, state.registry.aliases)
    assert r.status_code == status, r.text
    assert error_of(r)
    assert after == before


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        (damage_base_model, "base_mismatch"),
        (lambda root: (root / "fingpt-llama" / "v2" / WEIGHTS).write_bytes(b"\x00" * 64), "corrupt_adapter"),
        (lambda root: (root / "fingpt-llama" / "v2" / MANIFEST).write_text("[]"), "invalid_manifest"),
    ],
)
async def test_bad_adapters_load_nothing_and_log_nothing(
    serve: Any, admin: dict[str, str], engines: Any, adapter_root: Path, damage: Any, code: str
) -> None:
    write_stub_adapter(adapter_root, "fingpt-llama", "v2", "llama")
    damage(adapter_root)
    async with serve() as client:
        loras = set(engines["llama"].loras)
        r = await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2"}, headers=admin)
        served = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama"})
        rows = logged_forecasts(client)
    assert r.status_code == 422 and error_of(r)["code"] == code
    assert set(engines["llama"].loras) == loras
    assert served.json()["adapter"] == "fingpt-llama@v1"
    assert rows == 1  # the good forecast only
