"""One bootstrap for every entry point: settings → engines → app → lifespan → … → close.

:func:`running` is the service's life as one ``async with`` (as vLLM's
``build_async_engine_client`` is for its engine): it starts the configured engines unless
given some, builds the app with :func:`service.app.create_app`, runs its lifespan (adapters
preloaded, routing set, background tasks started), yields the started app, then stops it and
closes the engines it started. ``python -m service`` serves that app with uvicorn; the demo,
the backfill, the benchmarks and the tests talk to it in-process through the project's own
SDK (:func:`sdk_client`) or an httpx client over ``httpx.ASGITransport``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from clients.sdk import AsyncClient
from forecast.basemodels import TINY_MODEL_DIR, materialize_tiny_model
from forecast.providers.base import MarketData
from forecast.providers.snapshot import SNAPSHOT_LATEST
from forecast.settings import DataSettings
from service.app import create_app
from service.engine import EngineClient, VLLMEngine
from service.engine_args import resolve_model_id
from service.settings import ServiceSettings

log = logging.getLogger("service")


def prepare_settings(settings: ServiceSettings, data: DataSettings, demo_adapters: bool) -> ServiceSettings:
    """The settings an entry point serves: the snapshot's last week as the default date on
    the snapshot, the tiny model materialized when an engine runs it, the shipped release
    adapters seeded and preloaded when nothing else is configured to preload, and with
    ``demo_adapters`` untrained stand-ins written (where none exist) and preloaded."""
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
    elif not settings.preload and not settings.routing:
        from service.demo_adapters import seed_release_adapters

        seeded = seed_release_adapters(
            settings.adapter_root, [e.base for e in settings.engines],
            base_model=resolve_model_id(settings.engines[0]),
        )
        updates["preload"] = list(seeded)
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
    for base, engine in engines.items():
        try:
            await engine.aclose()
        except Exception:
            log.exception("the %s engine failed to shut down", base)
        else:
            log.info("closed the %s engine", base)


@asynccontextmanager
async def running(
    settings: ServiceSettings,
    market: MarketData,
    engines: Mapping[str, EngineClient] | None = None,
    **app_options: Any,
) -> AsyncIterator[FastAPI]:
    """The started app over ``engines`` (None: the configured engines, started here and
    closed on exit; given engines stay the caller's). ``app_options`` go to ``create_app``
    (``now``, ``rng``, ``restart``, ``tokenizer_for``)."""
    owned = engines is None
    started = await start_engines(settings) if engines is None else engines
    try:
        app = create_app(settings, started, market, **app_options)
        async with app.router.lifespan_context(app):
            yield app
    finally:
        if owned:
            await close_engines(started)


def sdk_client(app: FastAPI, settings: ServiceSettings, **options: Any) -> AsyncClient:
    """The project's SDK talking to ``app`` in-process (no socket), with the admin token."""
    return AsyncClient(
        "http://service", admin_token=settings.admin_token_value(),
        transport=httpx.ASGITransport(app=app), timeout=None, **options,
    )
