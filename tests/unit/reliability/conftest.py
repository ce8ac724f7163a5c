"""Fixtures of the reliability unit tests: the real app over FakeEngines (as in
tests/unit/service), with an optional engine-restart hook. Helpers: reliability_harness.py."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from forecast.providers.snapshot import SnapshotMarketData
from service.app import create_app
from service.settings import ServiceSettings
from service.testing import FakeEngine, write_stub_adapter

TOKEN = "reliability-admin-token-9f8e7d"
TODAY = dt.datetime(2024, 1, 5, 12, 0, tzinfo=dt.UTC)  # forecasts for the week of 2023-12-31


@pytest.fixture(scope="session")
def market() -> SnapshotMarketData:
    return SnapshotMarketData()


@pytest.fixture
def adapter_root(tmp_path: Path) -> Path:
    root = tmp_path / "adapters"
    write_stub_adapter(root, "fingpt-llama", "v1", "llama")
    write_stub_adapter(root, "fingpt-llama", "v2", "llama")
    write_stub_adapter(root, "fingpt-deepseek", "v1", "deepseek")
    return root


@pytest.fixture
def engines() -> dict[str, FakeEngine]:
    return {"llama": FakeEngine("llama"), "deepseek": FakeEngine("deepseek")}


@pytest.fixture
def make_settings(db_url: str, adapter_root: Path) -> Callable[..., ServiceSettings]:
    def make(**overrides: Any) -> ServiceSettings:
        fields: dict[str, Any] = {
            "admin_token": TOKEN,
            "adapter_root": adapter_root,
            "db_url": db_url,
            "preload": ["fingpt-llama@v1", "fingpt-deepseek@v1"],
            "max_new_tokens": 64,
            "weeks": 2,
            "news_per_week": 2,
        }
        fields.update(overrides)
        return ServiceSettings(_env_file=None, **fields)  # type: ignore[call-arg]

    return make


@pytest.fixture
def serve(
    make_settings: Callable[..., ServiceSettings],
    engines: dict[str, FakeEngine],
    market: SnapshotMarketData,
) -> Callable[..., Any]:
    """``async with serve(restart=..., data=..., now=..., **settings) as client``: the app
    started (lifespan) and an in-process client; ``client.app`` is the app."""

    @asynccontextmanager
    async def run(
        data: Any = None, restart: Any = None, now: dt.datetime = TODAY, **overrides: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        settings = make_settings(**overrides)
        app = create_app(
            settings, engines, data or market, now=lambda: now, rng=random.Random(7),
            restart=restart,
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
                client.app = app  # type: ignore[attr-defined]
                yield client

    return run


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}
