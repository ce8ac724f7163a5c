"""The real service app over FakeEngines, served by the service's own uvicorn ``Server`` in a
process of its own, for tests that signal or kill the service process.

    python tests/unit/reliability/fake_service.py --dir DIR [--delay-s 0.01] [--db-url URL]

Adapters ``fingpt-llama@v1,v2`` and ``fingpt-deepseek@v1`` are written under ``DIR/adapters``
(v1s preloaded, routed 50/50), the forecast log is ``DIR/forecasts.sqlite3`` (SQLite, WAL,
as shipped) unless ``--db-url`` names another database, the admin token is :data:`TOKEN`. The bound port is written to ``DIR/port``
once the server listens.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import socket
from pathlib import Path

import uvicorn

from forecast.providers.snapshot import SNAPSHOT_LATEST, SnapshotMarketData
from service.app import create_app
from service.main import Server
from service.settings import ServiceSettings
from service.testing import FakeEngine, write_stub_adapter

TOKEN = "fake-service-admin-token-77"


def build(directory: Path, max_inflight: int, db_url: str | None = None) -> ServiceSettings:
    root = directory / "adapters"
    for name, version, base in (
        ("fingpt-llama", "v1", "llama"), ("fingpt-llama", "v2", "llama"),
        ("fingpt-deepseek", "v1", "deepseek"),
    ):
        if not (root / name / version).is_dir():
            write_stub_adapter(root, name, version, base)
    return ServiceSettings(
        _env_file=None,  # type: ignore[call-arg]
        admin_token=TOKEN, adapter_root=root,
        db_url=db_url or f"sqlite:///{directory / 'forecasts.sqlite3'}",
        preload=["fingpt-llama@v1", "fingpt-deepseek@v1"],
        default_as_of=SNAPSHOT_LATEST, max_new_tokens=64, weeks=1, news_per_week=1,
        max_inflight=max_inflight,
    )


async def serve(
    directory: Path, delay_s: float, max_inflight: int, db_url: str | None = None
) -> None:
    settings = build(directory, max_inflight, db_url)
    engines = {"llama": FakeEngine("llama", delay_s=delay_s),
               "deepseek": FakeEngine("deepseek", delay_s=delay_s)}
    app = create_app(settings, engines, SnapshotMarketData(), now=lambda: dt.datetime.now(dt.UTC))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=60)
    server = Server(config)

    async def announce() -> None:
        while not server.started:
            await asyncio.sleep(0.01)
        tmp = directory / "port.tmp"
        tmp.write_text(str(sock.getsockname()[1]))
        tmp.rename(directory / "port")

    announcer = asyncio.create_task(announce())
    await server.serve(sockets=[sock])
    announcer.cancel()
    print("drained and stopped", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--delay-s", type=float, default=0.0, help="FakeEngine delay per word")
    parser.add_argument("--max-inflight", type=int, default=64)
    parser.add_argument("--db-url", default=None, help="forecast log; default DIR/forecasts.sqlite3")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.dir, args.delay_s, args.max_inflight, args.db_url))


if __name__ == "__main__":
    main()
