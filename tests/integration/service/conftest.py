"""The real service for integration tests: two vLLM CPU engines on the tiny model (one per
base, eager mode, float32), real peft adapters, the bundled snapshot, a SQLite log.

Engines start once per session (~1 min on 2 cores) and every test of this package shares
them through one app, in one session-scoped event loop (``loop_scope="session"``).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from support.engines import tiny_engines

from forecast.basemodels import BASES
from forecast.providers.snapshot import SnapshotMarketData
from service.bootstrap import running
from service.engine import EngineClient
from service.main import serving
from service.settings import ServiceSettings
from service.testing import write_peft_adapter

TOKEN = "integration-admin-token"
NOW = dt.datetime(2024, 1, 5, 12, 0, tzinfo=dt.UTC)  # default week: 2023-12-31


@pytest.fixture(scope="session")
def adapter_root(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    root = tmp_path_factory.mktemp("adapters")
    write_peft_adapter(tiny_model, root, "fingpt-llama", "v1", "llama", seed=1)
    write_peft_adapter(tiny_model, root, "fingpt-llama", "v2", "llama", seed=2)
    write_peft_adapter(tiny_model, root, "fingpt-deepseek", "v1", "deepseek", seed=3)
    return root


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engines(tiny_model: Path) -> AsyncIterator[dict[str, EngineClient]]:
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    async with tiny_engines(tiny_model, BASES, max_num_seqs=32, max_loras=4) as started:
        yield started


@pytest.fixture(scope="session")
def settings(adapter_root: Path, tmp_path_factory: pytest.TempPathFactory) -> ServiceSettings:
    db = tmp_path_factory.mktemp("db") / "forecasts.sqlite3"
    return ServiceSettings(
        _env_file=None,  # type: ignore[call-arg]
        admin_token=TOKEN,
        adapter_root=adapter_root,
        db_url=f"sqlite:///{db}",
        preload=["fingpt-llama@v1", "fingpt-deepseek@v1"],
        max_new_tokens=8,
        weeks=1,
        news_per_week=1,
        with_financials=False,
        ready_probe_s=3600,
        ready_timeout_s=600,  # a loaded 2-core machine can be very slow
        # Tests hold generations at a gate on purpose (support.gates), for as long as a swap
        # takes on a loaded host: the stall watchdog must not call that a hung engine.
        engine_stall_s=3600,
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def app(settings: ServiceSettings, engines: dict[str, EngineClient]) -> AsyncIterator[Any]:
    async with running(settings, SnapshotMarketData(), engines, now=lambda: NOW) as application:
        yield application


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc", timeout=600) as c:
        yield c


@pytest.fixture(scope="session")
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest_asyncio.fixture(loop_scope="session")
async def service_url(app: Any) -> AsyncIterator[str]:
    """The shared app on a real loopback socket (uvicorn in the session's loop)."""
    async with serving(app) as url:
        yield url
