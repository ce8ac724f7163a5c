"""Iterators over a streamed forecast (server-sent events: tokens, then the result).

The service sends ``token`` events while the model generates and one ``result`` event with
the structured forecast at the end; an ``error`` event ends the stream with a failure.
Iterating yields every event; :attr:`result` is the final forecast, and :attr:`ttft_s` the
client-side time from sending the request to the first token.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Self

import httpx

from clients.errors import StreamError
from clients.models import BatchItemError, Forecast, StreamEvent
from clients.sse import SSEDecoder

TOKEN_EVENTS = frozenset({"token", "delta"})
RESULT_EVENTS = frozenset({"result", "forecast", "final"})


@dataclass
class StreamState:
    started: float  # time.perf_counter() when the request was sent
    first_token_at: float | None = None
    tokens: int = 0
    result: Forecast | None = None
    text: str = ""

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    def apply(self, event: StreamEvent) -> StreamEvent:
        """Record ``event``; raise :class:`StreamError` for an ``error`` event."""
        if event.event in TOKEN_EVENTS:
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            self.tokens += 1
            self.text += token_text(event.data)
        elif event.event in RESULT_EVENTS:
            self.result = Forecast.model_validate(event.data)
        elif event.event == "error":
            err = event.data.get("error", event.data) if isinstance(event.data, dict) else {}
            raise StreamError(
                str(err.get("message") or event.data),
                error_type=str(err.get("type") or "stream_error"),
                code=err.get("code"),
            )
        return event

    def finish(self) -> Forecast:
        if self.result is None:
            raise StreamError("stream ended without a result event")
        return self.result


def token_text(data: object) -> str:
    if isinstance(data, dict):
        return str(data.get("text", data.get("token", "")))
    return "" if data is None else str(data)


class ForecastStream:
    """Events of one streamed forecast (sync). Closes the connection when done."""

    def __init__(self, response: httpx.Response, state: StreamState) -> None:
        self._response = response
        self.state = state
        self._consumed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._response.close()

    def __iter__(self) -> Iterator[StreamEvent]:
        if self._consumed:
            raise StreamError("stream already consumed")
        self._consumed = True
        decoder = SSEDecoder()
        try:
            for line in self._response.iter_lines():
                event = decoder.feed(line)
                if event is not None:
                    yield self.state.apply(event)
            tail = decoder.flush()
            if tail is not None:
                yield self.state.apply(tail)
        except httpx.TransportError as exc:
            raise StreamError(f"stream broken: {type(exc).__name__}: {exc}") from exc
        finally:
            self._response.close()
        self.state.finish()

    def tokens(self) -> Iterator[str]:
        """Only the generated text pieces."""
        for event in self:
            if event.event in TOKEN_EVENTS:
                yield token_text(event.data)

    @property
    def result(self) -> Forecast:
        """The structured forecast; reads the rest of the stream if needed."""
        if not self._consumed:
            for _ in self:
                pass
        return self.state.finish()

    @property
    def ttft_s(self) -> float | None:
        return self.state.ttft_s


class AsyncForecastStream:
    """Events of one streamed forecast (async)."""

    def __init__(self, response: httpx.Response, state: StreamState) -> None:
        self._response = response
        self.state = state
        self._consumed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._response.aclose()

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        if self._consumed:
            raise StreamError("stream already consumed")
        self._consumed = True
        decoder = SSEDecoder()
        try:
            async for line in self._response.aiter_lines():
                event = decoder.feed(line)
                if event is not None:
                    yield self.state.apply(event)
            tail = decoder.flush()
            if tail is not None:
                yield self.state.apply(tail)
        except httpx.TransportError as exc:
            raise StreamError(f"stream broken: {type(exc).__name__}: {exc}") from exc
        finally:
            await self._response.aclose()
        self.state.finish()

    async def tokens(self) -> AsyncIterator[str]:
        async for event in self:
            if event.event in TOKEN_EVENTS:
                yield token_text(event.data)

    async def collect(self) -> Forecast:
        """Read the stream to the end and return the forecast."""
        if not self._consumed:
            async for _ in self:
                pass
        return self.state.finish()

    @property
    def ttft_s(self) -> float | None:
        return self.state.ttft_s


def batch_item(event: StreamEvent) -> Forecast | BatchItemError | None:
    """One event of a streamed batch: a forecast, a per-ticker error, or None (``done``)."""
    if event.event in RESULT_EVENTS:
        return Forecast.model_validate(event.data)
    if event.event == "error" and isinstance(event.data, dict) and "ticker" in event.data:
        return BatchItemError.model_validate(event.data)
    if event.event == "error":  # the whole batch failed
        StreamState(started=0.0).apply(event)
    return None


def iter_batch(response: httpx.Response) -> Iterator[Forecast | BatchItemError]:
    decoder = SSEDecoder()
    try:
        for line in response.iter_lines():
            event = decoder.feed(line)
            if event is None:
                continue
            item = batch_item(event)
            if item is not None:
                yield item
            elif event.event == "done":
                return
    finally:
        response.close()


async def aiter_batch(response: httpx.Response) -> AsyncIterator[Forecast | BatchItemError]:
    decoder = SSEDecoder()
    try:
        async for line in response.aiter_lines():
            event = decoder.feed(line)
            if event is None:
                continue
            item = batch_item(event)
            if item is not None:
                yield item
            elif event.event == "done":
                return
    finally:
        await response.aclose()
