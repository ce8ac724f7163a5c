"""``python -m service``: start the engines, build the app, serve it with uvicorn.

Settings come from ``FORECAST_SERVICE_*`` (service) and ``FORECAST_*`` (market data) in the
environment, read here and nowhere else. On the embedded default (tiny model, bundled
snapshot) ``--demo-adapters`` writes untrained stand-in adapters for any base that has none,
preloads them and splits traffic evenly between them. A configuration that cannot work
(GPU memory shares over the card, prompts longer than the context) is refused before any
engine starts (``service.preflight``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn
from fastapi import FastAPI

from forecast.providers.base import MarketData
from forecast.providers.snapshot import SNAPSHOT_LATEST
from forecast.settings import DataSettings, market_data_from_settings
from service.bootstrap import (
    close_engines,
    engine_starter,
    prepare_settings,
    running,
    start_engines,
)
from service.engine import VLLMEngine
from service.engine_args import gpu_count, on_gpu
from service.logfilters import redact_access_log
from service.preflight import PreflightError, preflight
from service.settings import ServiceSettings

__all__ = [
    "SNAPSHOT_LATEST", "Server", "VLLMEngine", "close_engines", "engine_starter", "main",
    "prepare_settings", "serve", "serving", "start_engines",
]

log = logging.getLogger("service")


class Server(uvicorn.Server):
    """uvicorn re-raises the signal that stopped it once it has drained, which would kill the
    process before the engines below are shut down (leaving engine-core processes behind).
    Keep the signal instead; ``serve`` returns normally after closing the engines."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self.stopped_by = list(self._captured_signals)
                self._captured_signals.clear()


@contextlib.asynccontextmanager
async def serving(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """``app`` (already started: ``running()`` owns its lifespan) served by uvicorn in this
    event loop on ``host:port`` (0: a free port) until the block ends; yields its base URL.
    For the demo, the benchmarks and the tests that drive a started app over real HTTP."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises why it could not start
            await asyncio.sleep(0.05)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def serve(settings: ServiceSettings, market: MarketData) -> None:
    async with running(settings, market, restart=engine_starter(settings)) as app:
        # The lifespan is running()'s: uvicorn only serves (and drains) the started app.
        config = uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level="info", lifespan="off",
            timeout_graceful_shutdown=30,
        )
        redact_access_log()  # a ?token= in a request line is masked before it is logged
        await Server(config).serve()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--demo-adapters", action="store_true",
                        help="write untrained stand-in adapters where none exist, and serve them")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = ServiceSettings(**overrides)
    data = DataSettings()
    settings = prepare_settings(settings, data, args.demo_adapters)
    gpu = on_gpu()
    try:
        preflight(settings, gpu=gpu, gpus=gpu_count())
    except PreflightError as exc:  # the message on stderr, exit status 1, no traceback
        raise SystemExit(f"python -m service: refusing to start: {exc}") from None
    if gpu:
        # Asking torch about the GPU touched CUDA in this process: an engine core forked from
        # it cannot use CUDA ("Cannot re-initialize CUDA in forked subprocess", seen on the
        # H200). Spawned engine cores start clean.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    asyncio.run(serve(settings, market_data_from_settings(data)))


if __name__ == "__main__":
    main()
