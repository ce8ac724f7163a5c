"""Everything one app instance owns, built by :func:`service.app.create_app`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import anyio

from forecast.providers.base import MarketData
from service.adapters import AdapterRegistry
from service.engine import EngineClient
from service.forecast_log import ForecastLog
from service.forecaster import Forecaster
from service.gateway import Gateway
from service.market_gate import MarketGate
from service.openai_serving import OpenAIServing
from service.readiness import Readiness
from service.routing import Arm, Router
from service.scoring import Scorer
from service.settings import ServiceSettings
from service.supervisor import EngineSupervisor
from service.telemetry import Telemetry
from service.watchdog import StallWatch

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    settings: ServiceSettings
    engines: Mapping[str, EngineClient]
    market: MarketData
    telemetry: Telemetry
    registry: AdapterRegistry
    router: Router
    forecast_log: ForecastLog
    scorer: Scorer
    gateway: Gateway  # admission, adapter leases, engine errors, request counts
    forecaster: Forecaster
    openai: OpenAIServing  # the OpenAI-compatible routes' generations
    readiness: Readiness
    now: Callable[[], dt.datetime]
    market_gate: MarketGate
    stall_watch: StallWatch
    supervisor: EngineSupervisor | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Preload adapters, set the initial routing, start the watcher and the scorer."""
        s = self.settings
        for spec in s.preload:
            name, _, version = spec.partition("@")
            await self.registry.load(name, version or None, promote=True)
        await self.registry.settled()  # with folding on: start with the preloaded versions folded
        weights = s.routing or {name.partition("@")[0]: 1.0 for name in s.preload}
        if weights:
            arms = [Arm(name=alias, alias=alias, weight=w) for alias, w in weights.items()]
            for arm in arms:
                self.registry.resolve(arm.alias)
            self.router.set(arms, s.shadow, s.shadow_fraction)
        if s.watch_adapters:
            self.tasks.append(asyncio.create_task(self.registry.watch(s.watch_interval_s)))
        self.tasks.append(asyncio.create_task(self._score_forever(s.score_interval_s)))
        if self.supervisor is not None:  # restarts dead and hung engines
            self.tasks.append(asyncio.create_task(self.supervisor.run()))
        else:  # no restarts: a hung engine's requests still end in 503
            self.tasks.append(asyncio.create_task(self._end_stalls_forever(s.engine_check_s)))

    async def _score_forever(self, interval_s: float) -> None:
        while True:
            try:
                await anyio.to_thread.run_sync(self.scorer.score_pending)
            except Exception:
                log.exception("scorer run failed")
            await asyncio.sleep(interval_s)

    async def _end_stalls_forever(self, interval_s: float) -> None:
        while True:
            for base in self.stall_watch.stalled():
                ended = self.stall_watch.fail(base)
                log.error("engine %s is hung: %d requests ended (no restart hook)", base, ended)
            await asyncio.sleep(interval_s)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        await self.forecaster.drain()
        self.market_gate.close()
        await self.registry.settled()  # a fold under way: nothing is in flight now, it ends
        await self.registry.wait_unloaded()
        if self.supervisor is not None:
            await self.supervisor.aclose()
        self.forecast_log.close()  # its pool's connections; a later use reconnects
