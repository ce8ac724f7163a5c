"""SDK transport behaviour against a scripted server over real HTTP: retries and their waits,
error mapping, SSE streams. The service itself is exercised in test_sdk_service.py."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from clients.errors import (
    APIConnectionError,
    AuthenticationError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    ServiceUnavailableError,
    StreamError,
    error_fields,
    parse_retry_after,
)
from clients.retry import RetryPolicy
from clients.sdk import AsyncClient, Client
from clients.sse import SSEDecoder

FORECAST = {
    "ticker": "AAPL",
    "prediction": {"direction": "up", "bin": "U2", "percent_low": 1.0, "percent_high": 2.0},
    "adapter": "fingpt@v2",
    "arm": "a",
}


def _error(status: int, type_: str, code: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"type": type_, "message": f"{code} happened", "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class Script:
    """An app whose /v1/forecast answers the queued responses in order, then 200s."""

    def __init__(self, *responses: Callable[[], Response]) -> None:
        self.queue = list(responses)
        self.requests: list[dict[str, Any]] = []
        self.app = FastAPI()

        @self.app.post("/v1/forecast")
        async def forecast(request: Request) -> Response:
            self.requests.append(
                {"headers": dict(request.headers), "body": json.loads(await request.body())}
            )
            if self.queue:
                return self.queue.pop(0)()
            return JSONResponse(FORECAST)

        @self.app.get("/v1/adapters")
        async def adapters(request: Request) -> Response:
            self.requests.append({"headers": dict(request.headers), "body": None})
            return JSONResponse({"adapters": [], "aliases": {}})


@pytest.fixture
def sleeps() -> list[float]:
    return []


def _client(url: str, sleeps: list[float], **kw: Any) -> Client:
    return Client(url, sleep=sleeps.append, seed=0, **kw)


def test_503_with_retry_after_is_retried_after_the_servers_delay(
    serve: Any, sleeps: list[float]
) -> None:
    unavailable = lambda: _error(503, "service_unavailable", "overloaded", {"Retry-After": "2"})  # noqa: E731
    script = Script(unavailable, unavailable)
    with serve(script.app) as url, _client(url, sleeps) as c:
        f = c.forecast("AAPL")
    assert f.prediction is not None and f.prediction.bin == "U2"
    assert f.adapter_name == "fingpt" and f.adapter_version == "v2"
    assert sleeps == [2.0, 2.0]
    assert len(script.requests) == 3


def test_429_without_retry_after_backs_off_exponentially_with_jitter(
    serve: Any, sleeps: list[float]
) -> None:
    limited = lambda: _error(429, "rate_limit_error", "slow_down")  # noqa: E731
    script = Script(limited, limited, limited)
    policy = RetryPolicy(max_retries=3, backoff_base_s=0.5, backoff_max_s=1.5)
    with serve(script.app) as url, _client(url, sleeps, retry=policy) as c:
        c.forecast("AAPL")
    rng = random.Random(0)
    assert sleeps == [rng.uniform(0, 0.5), rng.uniform(0, 1.0), rng.uniform(0, 1.5)]


def test_retries_exhausted_raise_typed_error_with_retry_after(
    serve: Any, sleeps: list[float]
) -> None:
    unavailable = lambda: _error(503, "service_unavailable", "not_ready", {"Retry-After": "1"})  # noqa: E731
    script = Script(*[unavailable] * 5)
    with (
        serve(script.app) as url,
        _client(url, sleeps, retry=RetryPolicy(max_retries=2)) as c,
        pytest.raises(ServiceUnavailableError) as info,
    ):
        c.forecast("AAPL")
    assert info.value.status_code == 503
    assert info.value.error_type == "service_unavailable"
    assert info.value.code == "not_ready"
    assert info.value.retry_after == 1.0
    assert len(script.requests) == 3 and sleeps == [1.0, 1.0]


def test_client_errors_and_500_are_not_retried(serve: Any, sleeps: list[float]) -> None:
    script = Script(
        lambda: _error(404, "not_found_error", "unknown_ticker"),
        lambda: _error(500, "server_error", "internal_error"),
        lambda: _error(429, "rate_limit_error", "slow_down"),
    )
    with serve(script.app) as url, _client(url, sleeps, retry=RetryPolicy(0)) as c:
        with pytest.raises(NotFoundError) as nf:
            c.forecast("ZZZZ")
        with pytest.raises(InternalServerError):
            c.forecast("AAPL")
        with pytest.raises(RateLimitError):
            c.forecast("AAPL")
    assert nf.value.code == "unknown_ticker" and "unknown_ticker happened" in str(nf.value)
    assert len(script.requests) == 3 and sleeps == []


def test_refused_connection_is_retried_then_raised(sleeps: list[float], free_port: int) -> None:
    with _client(f"http://127.0.0.1:{free_port}", sleeps) as c, pytest.raises(APIConnectionError):
        c.forecast("AAPL")
    assert len(sleeps) == 3


def test_admin_token_only_on_admin_routes_and_never_in_repr(
    serve: Any, sleeps: list[float]
) -> None:
    script = Script()
    with serve(script.app) as url, _client(url, sleeps, admin_token="s3cret-token") as c:
        c.forecast("AAPL", client_key="user-7")
        c.list_adapters()
        assert "s3cret" not in repr(c)
    fc, ad = script.requests
    assert "authorization" not in fc["headers"]
    assert fc["headers"]["x-client-key"] == "user-7"
    assert fc["body"] == {"ticker": "AAPL"}
    assert ad["headers"]["authorization"] == "Bearer s3cret-token"


async def test_async_client_retries_like_the_sync_one(serve: Any) -> None:
    unavailable = lambda: _error(503, "service_unavailable", "overloaded", {"Retry-After": "3"})  # noqa: E731
    script = Script(unavailable)
    waits: list[float] = []

    async def fake_sleep(s: float) -> None:
        waits.append(s)

    with serve(script.app) as url:
        async with AsyncClient(url, sleep=fake_sleep) as c:
            f = await c.forecast("AAPL")
    assert f.ticker == "AAPL" and waits == [3.0]


# -- streams -------------------------------------------------------------------------------


def _sse(events: list[tuple[str, Any]]) -> Iterator[str]:
    for name, data in events:
        yield f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _stream_app(events: list[tuple[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/forecast")
    async def forecast() -> StreamingResponse:
        return StreamingResponse(_sse(events), media_type="text/event-stream")

    return app


def test_stream_yields_tokens_then_the_structured_result(serve: Any) -> None:
    events = [("token", {"text": "[Positive"}), ("token", {"text": " Developments]"})]
    events.append(("result", FORECAST))
    with serve(_stream_app(events)) as url, Client(url) as c:
        stream = c.stream_forecast("AAPL")
        assert list(stream.tokens()) == ["[Positive", " Developments]"]
        assert stream.result.arm == "a"
        assert stream.ttft_s is not None and stream.ttft_s >= 0
        assert stream.state.text == "[Positive Developments]"


def test_stream_error_event_raises_typed_stream_error(serve: Any) -> None:
    events = [
        ("token", {"text": "x"}),
        ("error", {"error": {"type": "engine_error", "message": "boom", "code": "dead"}}),
    ]
    with serve(_stream_app(events)) as url, Client(url) as c, pytest.raises(StreamError) as info:
        list(c.stream_forecast("AAPL"))
    assert info.value.error_type == "engine_error" and info.value.code == "dead"


async def test_async_stream_without_result_is_an_error(serve: Any) -> None:
    with serve(_stream_app([("token", {"text": "x"})])) as url:
        async with AsyncClient(url) as c:
            stream = await c.stream_forecast("AAPL")
            with pytest.raises(StreamError, match="without a result"):
                await stream.collect()


def test_sse_decoder_follows_the_event_stream_rules() -> None:
    d = SSEDecoder()
    lines = [": keep-alive", "event: token", 'data: {"text":', 'data: "a"}', "id: 7", ""]
    out = [d.feed(line) for line in lines]
    assert out[:-1] == [None] * 5
    ev = out[-1]
    assert ev is not None and ev.event == "token" and ev.id == "7"
    assert ev.data == {"text": "a"}  # two data lines joined by a newline, then JSON
    assert d.feed("data: plain") is None
    tail = d.flush()
    assert tail is not None and tail.event == "message" and tail.data == "plain"


def test_error_body_parsing_tolerates_other_shapes() -> None:
    assert error_fields(b'{"error": {"type": "t", "message": "m", "code": 3}}') == ("t", "m", 3)
    assert error_fields(b'{"detail": "Not Found"}') == ("http_error", "Not Found", None)
    assert error_fields(b"<html>bad gateway</html>")[0] == "http_error"
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def test_401_maps_to_authentication_error(serve: Any, sleeps: list[float]) -> None:
    script = Script(lambda: _error(401, "authentication_error", "invalid_token"))
    with serve(script.app) as url, _client(url, sleeps) as c, pytest.raises(AuthenticationError):
        c.forecast("AAPL")
