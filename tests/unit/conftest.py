"""Fixtures shared by the unit tests of more than one layer. The service fixtures need a
``token`` and an ``adapter_root`` fixture from the directory's own conftest."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.service import Clock, in_process, service_settings

from forecast.providers.snapshot import SnapshotMarketData
from service.settings import ServiceSettings
from service.testing import FakeEngine


@pytest.fixture(scope="session")
def llama3_shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both bases' 8B-shaped checkpoints (config + the real Llama-3 tokenizer, no weights)."""
    from forecast.basemodels import BASES, materialize_8b_shape

    root = tmp_path_factory.mktemp("shapes")
    return {base: materialize_8b_shape(root / base, base) for base in BASES}


@pytest.fixture(scope="session")
def llama3_tokenizers(llama3_shapes: dict[str, Path]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    return {base: AutoTokenizer.from_pretrained(str(path)) for base, path in llama3_shapes.items()}


# -- the service over FakeEngines ----------------------------------------------------------


@pytest.fixture(scope="session")
def market() -> SnapshotMarketData:
    return SnapshotMarketData()


@pytest.fixture
def engines() -> dict[str, FakeEngine]:
    return {"llama": FakeEngine("llama"), "deepseek": FakeEngine("deepseek")}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_settings(token: str, db_url: str, adapter_root: Path) -> Callable[..., ServiceSettings]:
    def make(**overrides: Any) -> ServiceSettings:
        return service_settings(token, adapter_root, db_url, **overrides)

    return make


@pytest.fixture
def serve(
    make_settings: Callable[..., ServiceSettings],
    engines: dict[str, FakeEngine],
    market: SnapshotMarketData,
    clock: Clock,
) -> Callable[..., Any]:
    """``async with serve(data=..., restart=..., now=..., tokenizer_for=..., **settings) as
    client``: the app started (lifespan) and an in-process client; ``client.app`` is the app.
    Time is the ``clock`` fixture's unless ``now`` fixes it."""

    @asynccontextmanager
    async def run(
        data: Any = None, restart: Any = None, now: dt.datetime | None = None,
        tokenizer_for: Any = None, **overrides: Any,
    ) -> AsyncIterator[httpx.AsyncClient]:
        options: dict[str, Any] = {"restart": restart}
        if tokenizer_for is not None:
            options["tokenizer_for"] = tokenizer_for
        at = clock if now is None else (lambda: now)
        async with in_process(make_settings(**overrides), engines, data or market, at, **options) as c:
            yield c

    return run


@pytest.fixture
def admin(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
