"""Engine supervision: a dead engine is replaced and its adapters reloaded while the service runs.

Every ``engine_check_s`` seconds :class:`EngineSupervisor` asks each engine for its health (no
generation: a flag and a liveness check of the engine-core process) and the stall watch
whether one is hung (alive, but no token for ``engine_stall_s`` while requests wait on it:
those requests get 503 ``engine_stalled`` at once). When one is dead or hung:

1. a :class:`Restarting` stand-in takes its place in the app's engine map, so readiness turns
   red and requests routed to that base get 503 with ``Retry-After`` instead of waiting on a
   dead engine (the other bases keep serving);
2. the dead engine is closed and a new one started, retried with exponential backoff;
3. every adapter version the registry had on that base is loaded on the new engine under a
   fresh LoRA id, behind the registry's per-adapter locks; aliases do not change;
4. the new engine takes the stand-in's place, and readiness probes it afresh.

The supervisor closes the engines it started; whoever started the first ones closes those.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path

from service.adapters import AdapterRegistry
from service.engine import (
    Chunk,
    EngineClient,
    EngineDead,
    EngineInfo,
    EngineRestarting,
    EngineStats,
    GenerationParams,
    LoraRef,
)
from service.readiness import Readiness
from service.telemetry import Telemetry
from service.watchdog import StallWatch

log = logging.getLogger(__name__)

EngineStarter = Callable[[str], Awaitable[EngineClient]]  # base -> a started engine


class Restarting:
    """Stands in for a dead engine while its replacement starts: refuses everything."""

    def __init__(self, info: EngineInfo, reason: str, retry_after_s: int) -> None:
        self._info = info
        self.reason = reason
        self._retry_after_s = retry_after_s

    def _refusal(self) -> EngineRestarting:
        return EngineRestarting(
            f"engine {self._info.base} is restarting ({self.reason})", self._retry_after_s
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    async def generate(
        self, prompt: str, params: GenerationParams, lora: LoraRef | None, request_id: str
    ) -> AsyncIterator[Chunk]:
        raise self._refusal()
        yield  # an async generator, like every engine's  # pragma: no cover

    async def add_lora(self, lora: LoraRef) -> None:
        raise self._refusal()

    async def remove_lora(self, lora_id: int) -> None:
        return None  # the dead engine's adapters went with it

    async def list_loras(self) -> set[int]:
        return set()

    async def prepare_fold(self, path: Path) -> None:
        raise self._refusal()

    async def fold(self, path: Path | None) -> None:
        raise self._refusal()

    async def weights_checksum(self) -> str:
        raise self._refusal()

    def stats(self) -> EngineStats:
        return EngineStats()

    async def health(self) -> None:
        raise self._refusal()

    async def aclose(self) -> None:
        return None


class EngineSupervisor:
    def __init__(
        self,
        engines: MutableMapping[str, EngineClient],
        registry: AdapterRegistry,
        readiness: Readiness,
        telemetry: Telemetry,
        start: EngineStarter,
        watch: StallWatch,
        *,
        check_s: float,
        backoff_s: float,
        backoff_max_s: float,
        retry_after_s: int,
    ) -> None:
        self._engines = engines
        self._registry = registry
        self._readiness = readiness
        self._telemetry = telemetry
        self._start = start
        self._watch = watch
        self._check_s = check_s
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._retry_after_s = retry_after_s
        self._restarts: dict[str, asyncio.Task[None]] = {}
        self._starting: set[asyncio.Future[EngineClient]] = set()
        self.started: list[EngineClient] = []  # replacements; closed by :meth:`aclose`
        for base in engines:
            telemetry.engine_up.labels(base).set(1)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed start number ``attempt`` (from 0)."""
        return float(min(self._backoff_max_s, self._backoff_s * 2**attempt))

    def restarting(self) -> list[str]:
        return sorted(self._restarts)

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self._check_s)

    async def check_once(self) -> list[str]:
        """Ask every engine for its health and the watch for hung ones; start a restart for
        each dead or hung one (returned)."""
        dead = self._restart_stalled()
        for base, engine in list(self._engines.items()):
            if base in self._restarts:
                continue
            try:
                await engine.health()
            except EngineDead as exc:
                dead.append(base)
                self._restarts[base] = asyncio.create_task(self._restart(base, str(exc)))
            except Exception:
                log.exception("health check of engine %s failed", base)
        return dead

    def _restart_stalled(self) -> list[str]:
        stalled = []
        for base in self._watch.stalled():
            ended = self._watch.fail(base)  # even mid-restart: the old engine will not wake them
            if base in self._restarts or base not in self._engines:
                continue
            reason = f"no progress for {self._watch.stall_s:g} s"
            log.error("engine %s is hung (%s; %d requests ended)", base, reason, ended)
            self._telemetry.engine_stall_restarts.labels(base).inc()
            self._restarts[base] = asyncio.create_task(self._restart(base, reason))
            stalled.append(base)
        return stalled

    async def wait_restarted(self) -> None:
        """Wait for the restarts in progress (tests, shutdown)."""
        while self._restarts:
            await asyncio.gather(*list(self._restarts.values()), return_exceptions=True)

    async def _restart(self, base: str, reason: str) -> None:
        try:
            old = self._engines[base]
            self._engines[base] = Restarting(old.info, reason, self._retry_after_s)
            self._telemetry.engine_up.labels(base).set(0)
            log.error("engine %s is dead (%s): restarting it", base, reason)
            await _close_quietly(old)
            new = await self._start_with_backoff(base)
            reloaded = await self._registry.reattach(base, new)
            self._engines[base] = new
            self._readiness.forget(base)
            self._telemetry.engine_up.labels(base).set(1)
            self._telemetry.engine_restarts.labels(base, "ok").inc()
            log.info("engine %s restarted; adapters reloaded: %s", base, ", ".join(reloaded) or "none")
        finally:
            self._restarts.pop(base, None)

    async def _start_with_backoff(self, base: str) -> EngineClient:
        attempt = 0
        while True:
            # Shielded: a shutdown that cancels the restart still gets the engine to close.
            starting = asyncio.ensure_future(self._start(base))
            self._starting.add(starting)
            try:
                engine = await asyncio.shield(starting)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._starting.discard(starting)
                self._telemetry.engine_restarts.labels(base, "failed").inc()
                delay = self.backoff(attempt)
                log.error("engine %s did not start (%s); next try in %.1f s", base, exc, delay)
                await asyncio.sleep(delay)
                attempt += 1
                continue
            self._starting.discard(starting)
            self.started.append(engine)
            return engine

    async def aclose(self) -> None:
        """Stop restarting and close every engine this supervisor started."""
        for task in self._restarts.values():
            task.cancel()
        await asyncio.gather(*list(self._restarts.values()), return_exceptions=True)
        for starting in list(self._starting):  # a start cannot be interrupted: let it end
            with contextlib.suppress(Exception):
                self.started.append(await starting)
        self._starting.clear()
        for engine in self.started:
            await _close_quietly(engine)
        self.started.clear()


async def _close_quietly(engine: EngineClient) -> None:
    try:
        await engine.aclose()
    except Exception:
        log.exception("closing engine %s failed", engine.info.base)
