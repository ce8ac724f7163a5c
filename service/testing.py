"""Test doubles and fixtures shared by the unit and integration tests.

:class:`FakeEngine` honours :class:`~service.engine.EngineClient` without a model: it answers
every prompt with a well-formed FinGPT answer whose bin is a hash of the prompt and adapter
(so different adapters answer differently, and the same one always the same), streamed word
by word. A ``gate`` holds generations in flight until the test opens it. :class:`StormyLive`
is a live market source whose Finnhub side hangs or answers HTTP 500 on demand. Adapter writers
build ``<root>/<name>/<version>/`` directories: a stub (valid files, no real weights) for the
fake engine, or a real peft LoRA on the tiny model for vLLM.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import struct
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from forecast.basemodels import BASES
from forecast.bins import Bin
from forecast.manifest import AdapterManifest, write_manifest
from forecast.providers.base import MarketData
from forecast.templates import ChatFormat
from forecast.types import BasicFinancials, CompanyProfile, Fetched, NewsItem
from service.demo_adapters import TARGETS
from service.demo_adapters import manifest_for as demo_manifest
from service.demo_adapters import write_peft_adapter as demo_write_peft
from service.engine import (
    Chunk,
    EngineDead,
    EngineInfo,
    EngineStats,
    GenerationParams,
    LoraLoadError,
    LoraRef,
)
from service.manifest import PEFT_CONFIG, WEIGHTS

TINY_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def fake_answer(seed: str) -> str:
    bins = list(Bin)
    pick = bins[int(hashlib.sha256(seed.encode()).hexdigest(), 16) % len(bins)]
    return (
        "[Positive Developments]:\n1. Strong demand.\n2. New products.\n\n"
        "[Potential Concerns]:\n1. Margin pressure.\n\n"
        f"[Prediction & Analysis]:\nPrediction: {pick.phrase().capitalize()}\n"
        "Analysis: The balance of news points this way."
    )


class FakeEngine:
    def __init__(
        self,
        base: str = "llama",
        *,
        model_id: str = TINY_ID,
        chat_format: ChatFormat | None = None,
        max_lora_rank: int = 16,
        delay_s: float = 0.0,
        structured_output: bool = False,
    ) -> None:
        self._info = EngineInfo(
            base=base, model_id=model_id, chat_format=chat_format or BASES[base].chat_format,
            max_lora_rank=max_lora_rank, max_loras=4, structured_output=structured_output,
        )
        self.params: list[GenerationParams] = []  # of every generation, in order
        self.delay_s = delay_s
        self.gate: asyncio.Event | None = None  # set one to hold generations in flight
        self.loras: dict[int, LoraRef] = {}
        self.fail_loads: set[str] = set()  # LoRA names ("name@version") whose load fails
        self.used: list[str | None] = []  # adapter of every generation, in order
        self.removed: list[int] = []
        self.running = 0
        self.dead = False

    @property
    def info(self) -> EngineInfo:
        return self._info

    async def generate(
        self, prompt: str, params: GenerationParams, lora: LoraRef | None, request_id: str
    ) -> AsyncIterator[Chunk]:
        if self.dead:
            raise EngineDead(f"engine {self._info.base} is dead")
        if lora is not None and lora.lora_id not in self.loras:
            raise LoraLoadError(f"LoRA {lora.lora_id} used but not loaded")
        self.used.append(None if lora is None else lora.name)
        self.params.append(params)
        self.running += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
            seed = prompt + (lora.name if lora else "")
            if params.choices:  # constrained: one of the choices, whole, as one chunk
                digest = int(hashlib.sha256(seed.encode()).hexdigest(), 16)
                words = [params.choices[digest % len(params.choices)]]
            else:
                words = fake_answer(seed).split(" ")
            cut = len(words) > params.max_tokens  # as vLLM: "length" when the budget ended it
            words = words[: params.max_tokens]
            for i, word in enumerate(words):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                last = i == len(words) - 1
                yield Chunk(
                    delta=word if i == 0 else " " + word, tokens=i + 1, finished=last,
                    finish_reason=("length" if cut else "stop") if last else None, queue_s=0.0,
                )
        finally:
            self.running -= 1

    async def add_lora(self, lora: LoraRef) -> None:
        await asyncio.sleep(0)
        if lora.name in self.fail_loads:
            raise LoraLoadError(f"injected failure loading {lora.name}")
        if not (lora.path / PEFT_CONFIG).is_file():
            raise LoraLoadError(f"no adapter found for {lora.name}")
        self.loras[lora.lora_id] = lora

    async def remove_lora(self, lora_id: int) -> None:
        self.loras.pop(lora_id, None)
        self.removed.append(lora_id)

    async def list_loras(self) -> set[int]:
        return set(self.loras)

    def stats(self) -> EngineStats:
        return EngineStats(kv_cache_usage=0.0, running=self.running, waiting=0)

    async def health(self) -> None:
        if self.dead:
            raise EngineDead(f"engine {self._info.base} is dead")

    async def aclose(self) -> None:
        self.dead = True


class StormyLive:
    """A live market source (for ``CachedMarketData``) whose Finnhub side — profiles, news,
    financials — fails on demand while prices keep answering from ``market``.

    ``mode`` None answers from ``market``. ``"hang"``: every call blocks until
    :meth:`release`, then answers (a provider that stopped responding). ``"500"``: the real
    :class:`~forecast.providers.live.FinnhubProvider` against a server that answers HTTP 500,
    through its retries and exponential backoff (``backoff_s``, doubling); its sleeps end at
    :meth:`release`, after which the retries run out at once. ``blocked`` counts calls in
    progress, ``calls`` every call made while failing.
    """

    def __init__(self, market: MarketData, backoff_s: float = 1.0) -> None:
        from forecast.providers.live import Backoff, FinnhubProvider, TokenBucket

        self.market = market
        self.mode: str | None = None
        self.blocked = 0
        self.calls = 0
        self._released = threading.Event()
        self._lock = threading.Lock()
        self.prices = market.prices
        self.news = self.profiles = self.financials = self
        self._finnhub = FinnhubProvider(
            _Http500Client(), limiter=TokenBucket(rate_per_minute=1e9),
            backoff=Backoff(retries=3, base_seconds=backoff_s), sleep=self._sleep,
        )

    def release(self) -> None:
        self._released.set()

    def _sleep(self, seconds: float) -> None:
        self._released.wait(seconds)

    def _call(self, provider: str, name: str, *args: Any) -> Any:
        healthy = getattr(getattr(self.market, provider), name)
        mode = self.mode
        if mode is None:
            return healthy(*args)
        with self._lock:
            self.calls += 1
            self.blocked += 1
        try:
            if mode == "hang":
                self._released.wait()
                return healthy(*args)
            return getattr(self._finnhub, name)(*args)
        finally:
            with self._lock:
                self.blocked -= 1

    def company_news(self, ticker: str, start: dt.date, end: dt.date) -> Fetched[list[NewsItem]]:
        return self._call("news", "company_news", ticker, start, end)  # type: ignore[no-any-return]

    def profile(self, ticker: str) -> Fetched[CompanyProfile]:
        return self._call("profiles", "profile", ticker)  # type: ignore[no-any-return]

    def basic_financials(self, ticker: str) -> Fetched[list[BasicFinancials]]:
        return self._call("financials", "basic_financials", ticker)  # type: ignore[no-any-return]


class _Http500Client:
    """A ``finnhub.Client`` whose every request meets HTTP 500."""

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        import finnhub
        import requests

        response = requests.Response()
        response.status_code = 500
        response._content = b'{"error": "Internal Server Error"}'
        raise finnhub.FinnhubAPIException(response)

    company_news = company_profile2 = company_basic_financials = _fail


def manifest_for(
    name: str, version: str, base: str, *, base_model: str = TINY_ID, r: int = 8, **extra: Any
) -> AdapterManifest:
    fields: dict[str, Any] = {
        "data_window": {"start": "2023-05-01", "end": "2023-09-30"},
        "metrics": {"binary_accuracy": 0.5},
        "code_revision": "test",
        "created_at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    }
    return demo_manifest(name, version, base, base_model=base_model, r=r, **(fields | extra))


def write_stub_adapter(root: Path, name: str, version: str, base: str = "llama", **manifest: Any) -> Path:
    """A directory that passes validation but holds no real weights (for FakeEngine)."""
    path = root / name / version
    path.mkdir(parents=True, exist_ok=True)
    fields = manifest_for(name, version, base, **manifest)
    (path / PEFT_CONFIG).write_text(json.dumps(
        {"peft_type": "LORA", "r": fields.lora.r, "lora_alpha": fields.lora.alpha,
         "target_modules": TARGETS, "base_model_name_or_path": fields.base_model}
    ))
    header = b'{"__metadata__":{"format":"pt"}}'
    (path / WEIGHTS).write_bytes(struct.pack("<Q", len(header)) + header)
    write_manifest(path, fields)
    return path


def write_peft_adapter(
    model_dir: Path, root: Path, name: str, version: str, base: str = "llama", *, seed: int = 0
) -> Path:
    """A real rank-8 LoRA on the tiny model, initialised at random so it changes outputs."""
    return demo_write_peft(model_dir, root, name, version, base, base_model=TINY_ID, seed=seed)


def error_of(response: Any) -> dict[str, Any]:
    """The ``error`` object of an httpx response, asserting the one error shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"type", "message", "code"}, body
    return dict(body["error"])


def parse_sse(text: str) -> list[tuple[str, str]]:
    """``(event, data)`` pairs of a complete text/event-stream body."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            events.append((name, "\n".join(data)))
    return events
