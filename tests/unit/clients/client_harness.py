"""Helpers of the client tests: any ASGI app over real loopback HTTP; the service on FakeEngines."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn


@contextmanager
def serve_http(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def serve() -> Any:
    """``with serve(app) as url:`` runs an ASGI app over real HTTP for the test."""
    return serve_http


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
