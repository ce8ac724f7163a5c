"""Helpers of the client tests: any ASGI app over real loopback HTTP; the service on FakeEngines."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.http import free_port as unused_port
from support.http import serve_http


@pytest.fixture
def serve() -> Any:
    """``with serve(app) as url:`` runs an ASGI app over real HTTP for the test."""
    return serve_http


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    return unused_port()


ADMIN_TOKEN = "test-admin-token-0123456789"
AS_OF = "2023-12-29"  # inside the bundled snapshot's news window


@dataclass
class FakeService:
    """The real service app on FakeEngines, served over loopback HTTP."""

    url: str
    root: Path
    engines: dict[str, Any]


@pytest.fixture
def fake_service(tmp_path: Path) -> Iterator[FakeService]:
    """Adapters ``fingpt-llama@v1,v2`` and ``fingpt-deepseek@v1`` on disk; v1 of each
    preloaded and routed 50/50; admin token :data:`ADMIN_TOKEN`."""
    from forecast.providers.snapshot import SnapshotMarketData
    from service.app import create_app
    from service.settings import ServiceSettings
    from service.testing import FakeEngine, write_stub_adapter

    root = tmp_path / "adapters"
    write_stub_adapter(root, "fingpt-llama", "v1", "llama")
    write_stub_adapter(root, "fingpt-llama", "v2", "llama")
    write_stub_adapter(root, "fingpt-deepseek", "v1", "deepseek")
    settings = ServiceSettings(
        admin_token=ADMIN_TOKEN,
        adapter_root=root,
        db_url=f"sqlite:///{tmp_path / 'forecasts.sqlite3'}",
        preload=["fingpt-llama@v1", "fingpt-deepseek@v1"],
        routing={"fingpt-llama": 0.5, "fingpt-deepseek": 0.5},
        default_as_of=dt.date.fromisoformat(AS_OF),
        max_new_tokens=64,
    )
    engines = {"llama": FakeEngine("llama"), "deepseek": FakeEngine("deepseek")}
    app = create_app(settings, engines, SnapshotMarketData())
    with serve_http(app) as url:
        yield FakeService(url=url, root=root, engines=engines)
