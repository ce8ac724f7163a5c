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
import datetime as dt
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import uvicorn

from forecast.basemodels import TINY_MODEL_DIR, materialize_tiny_model
from forecast.providers.base import MarketData
from forecast.settings import DataSettings, market_data_from_settings
from service.engine import EngineClient, VLLMEngine, gpu_count, on_gpu, resolve_model_id
from service.logfilters import redact_access_log
from service.preflight import PreflightError, preflight
from service.settings import ServiceSettings

log = logging.getLogger("service")

SNAPSHOT_LATEST = dt.date(2023, 12, 31)  # the snapshot's last week with news


def prepare_settings(settings: ServiceSettings, data: DataSettings, demo_adapters: bool) -> ServiceSettings:
    updates: dict[str, object] = {}
    if settings.default_as_of is None and data.data_source == "snapshot":
        updates["default_as_of"] = SNAPSHOT_LATEST
    if any(Path(e.model) == TINY_MODEL_DIR for e in settings.engines):
        materialize_tiny_model(TINY_MODEL_DIR)
    if demo_adapters:
        from service.demo_adapters import ensure_demo_adapters

        first = settings.engines[0]
        names = ensure_demo_adapters(
            Path(first.model), settings.adapter_root, [e.base for e in settings.engines],
            base_model=resolve_model_id(first),
        )
        updates["preload"] = list(dict.fromkeys([*settings.preload, *names]))
    return settings.model_copy(update=updates)


async def start_engines(settings: ServiceSettings) -> dict[str, EngineClient]:
    engines: dict[str, EngineClient] = {}
    for spec in settings.engines:
        engines[spec.base] = VLLMEngine.start(spec)  # inside the serving loop, on purpose
    return engines


def engine_starter(settings: ServiceSettings) -> Callable[[str], Awaitable[EngineClient]]:
    """Start a replacement engine for a base, in a worker thread: the serving loop keeps
    answering (503 for that base, the others as usual) while it loads."""
    specs = {spec.base: spec for spec in settings.engines}

    async def start(base: str) -> EngineClient:
        return await asyncio.to_thread(VLLMEngine.start, specs[base])

    return start


async def close_engines(engines: Mapping[str, EngineClient]) -> None:
    for engine in engines.values():
        try:
            await engine.aclose()
        except Exception:
            log.exception("engine shutdown failed")


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


async def serve(settings: ServiceSettings, market: MarketData) -> None:
    from service.app import create_app

    engines = await start_engines(settings)
    try:
        app = create_app(settings, engines, market, restart=engine_starter(settings))
        config = uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level="info", lifespan="on",
            timeout_graceful_shutdown=30,
        )
        redact_access_log()  # a ?token= in a request line is masked before it is logged
        await Server(config).serve()
    finally:
        await close_engines(engines)


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
