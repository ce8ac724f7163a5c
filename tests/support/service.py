"""The service as the unit tests drive it: the real app over FakeEngines, the bundled
snapshot and a real SQLite file, started through the one bootstrap (``service.bootstrap``)
and driven in-process through httpx with a fixed clock."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from forecast.providers.base import MarketData
from service.bootstrap import running
from service.engine import EngineClient
from service.settings import ServiceSettings
from service.testing import write_stub_adapter

TODAY = dt.datetime(2024, 1, 5, 12, 0, tzinfo=dt.UTC)  # forecasts for the week of 2023-12-31
PRELOAD = ["fingpt-llama@v1", "fingpt-deepseek@v1"]


class Clock:
    def __init__(self, now: dt.datetime = TODAY) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def stub_adapters(root: Path, refs: list[str]) -> Path:
    """Stub adapters ``name@version`` under ``root``; the base is the name's last part."""
    for ref in refs:
        name, _, version = ref.partition("@")
        write_stub_adapter(root, name, version, name.rsplit("-", 1)[-1])
    return root


def service_settings(token: str, adapter_root: Path, db_url: str, **overrides: Any) -> ServiceSettings:
    """Small prompts and answers, both v1 adapters preloaded; ``overrides`` go over them."""
    fields: dict[str, Any] = {
        "admin_token": token,
        "adapter_root": adapter_root,
        "db_url": db_url,
        "preload": PRELOAD,
        "max_new_tokens": 64,
        "weeks": 2,
        "news_per_week": 2,
    }
    fields.update(overrides)
    return ServiceSettings(_env_file=None, **fields)  # type: ignore[call-arg]


@asynccontextmanager
async def in_process(
    settings: ServiceSettings,
    engines: Mapping[str, EngineClient],
    market: MarketData,
    now: Callable[[], dt.datetime],
    **app_options: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app started (lifespan) and an in-process client; ``client.app`` is the app."""
    async with running(settings, market, engines, now=now, rng=random.Random(7), **app_options) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client
