"""The adapter registry: versioned LoRA adapters, aliases that serve them, and hot-swap.

Modelled on vLLM's ``OpenAIServingModels``: a per-adapter ``asyncio.Lock``, monotonically
increasing integer LoRA ids that are never reused, and the registry changed only *after* the
engine accepted the adapter, so a failed load leaves everything as it was.

A *version* (``name@version``) is a loaded adapter; an *alias* (by default the adapter's name)
points at the version that serves it. A swap loads the new version, flips the alias in one
step (no ``await`` between reading and writing it), and retires the old version: requests
that already hold it (counted by :meth:`AdapterRegistry.acquire`) finish on it, and the last
one out unloads it from the engine.

Folding (``fold_dir`` set; :mod:`service.fold` says why): the version an adapter's own alias
(the alias named after it) is promoted to is added into its base's weights, and its requests
go to the engine with no LoRA; every other version of that base is served through its
difference LoRA against the folded one (``LoadedAdapter.engine_lora``). A promote flips the
alias at once (the new version served exactly through its LoRA against the current fold) and
leaves moving the weights to the base's fold task (:mod:`service.folding`): the promote does
not wait for the base's in-flight requests, and a failed fold changes nothing that is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.engine import EngineClient, EngineDead, LoraLoadError, LoraRef
from service.errors import AdapterError, Conflict, NotFound, Unavailable
from service.folding import BaseFold, Folds
from service.manifest import (
    AdapterManifest,
    adapter_dir,
    check_fits_engine,
    check_segment,
    names_on_disk,
    read_manifest,
    versions_on_disk,
)
from service.telemetry import NEW_ADAPTER, Telemetry

log = logging.getLogger(__name__)


@dataclass
class LoadedAdapter:
    name: str
    version: str
    manifest: AdapterManifest
    lora: LoraRef
    loaded_at: float
    inflight: int = 0
    retired: bool = False
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    # What its requests send to the engine: its own LoRA; None while it is folded into the
    # weights; its difference LoRA while another version of its base is folded.
    engine_lora: LoraRef | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def base(self) -> str:
        return self.manifest.served_base

    @property
    def rank(self) -> int:
        return self.manifest.lora.r


@dataclass
class _NameLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # calls holding or waiting for the lock


class AdapterRegistry:
    def __init__(
        self,
        root: Path,
        engines: Mapping[str, EngineClient],
        telemetry: Telemetry,
        clock: Callable[[], float] = time.monotonic,
        *,
        fold_dir: Path | None = None,
        fold_drain_timeout_s: float = 120.0,
    ) -> None:
        self.root = root
        self._engines = engines
        self._telemetry = telemetry
        self._clock = clock
        self._ids = itertools.count(1)
        self._locks: dict[str, _NameLock] = {}  # only names some call is using now
        self._versions: dict[str, LoadedAdapter] = {}
        self._aliases: dict[str, str] = {}
        self._unloads: set[asyncio.Task[None]] = set()
        self._watch_failed: set[str] = set()
        self._folds = Folds[LoadedAdapter](
            fold_dir, engines, telemetry, self._ids,
            lambda base: [a for a in self._versions.values() if a.base == base], fold_drain_timeout_s,
        )

    # -- reading --------------------------------------------------------------------------

    @property
    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def loaded(self) -> list[LoadedAdapter]:
        return sorted(self._versions.values(), key=lambda a: (a.name, a.lora.lora_id))

    def aliases_of(self, ref: str) -> list[str]:
        return sorted(alias for alias, target in self._aliases.items() if target == ref)

    def resolve(self, target: str) -> LoadedAdapter:
        """An alias, or an explicit ``name@version`` that is loaded and not retiring."""
        ref = target if "@" in target else self._aliases.get(target)
        found = self._versions.get(ref) if ref is not None else None
        if found is None or found.retired:
            raise NotFound(f"no adapter serves {target!r}", code="adapter_not_loaded")
        return found

    def available(self) -> dict[str, list[str]]:
        return {name: versions_on_disk(self.root, name) for name in names_on_disk(self.root)}

    def latest_version(self, name: str) -> str:
        versions = versions_on_disk(self.root, check_segment("name", name))
        if not versions:
            raise NotFound(f"no versions of adapter {name!r} under the root", code="adapter_not_found")
        return versions[-1]

    # -- serving --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def acquire(self, target: str) -> AsyncIterator[LoadedAdapter]:
        """Hold the version serving ``target`` for one request; it is not unloaded, nor its
        base's fold changed, meanwhile. Waits while its base's weights are being folded."""
        adapter = self.resolve(target)
        while not (gate := self._folds.of(adapter.base).open).is_set():
            await gate.wait()
            adapter = self.resolve(target)
        # resolve and count with no await in between
        fold = self._folds.of(adapter.base)
        fold.inflight += 1
        fold.idle.clear()
        adapter.inflight += 1
        adapter.drained.clear()
        self._telemetry.inflight.labels(adapter.name, adapter.version).inc()
        try:
            yield adapter
        finally:
            fold.inflight -= 1
            if fold.inflight == 0:
                fold.idle.set()
            adapter.inflight -= 1
            self._telemetry.inflight.labels(adapter.name, adapter.version).dec()
            if adapter.inflight == 0:
                adapter.drained.set()
                if adapter.retired:
                    self._schedule_unload(adapter)

    # -- changing -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _locked(self, name: str) -> AsyncIterator[None]:
        """Hold ``name``'s lock; the last user out drops it, so names that fail to load (or
        are unloaded) leave nothing behind."""
        entry = self._locks.setdefault(name, _NameLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[name]

    async def load(
        self, name: str, version: str | None = None, *, promote: bool = True, alias: str | None = None
    ) -> LoadedAdapter:
        """Load ``name@version`` (newest on disk when None); with ``promote``, make it serve
        ``alias`` (default: ``name``). On any failure the registry is unchanged."""
        version = version or self.latest_version(name)
        alias = check_segment("alias", alias or name)
        started = self._clock()
        async with self._locked(name):
            try:
                adapter = await self._load_locked(name, version)
                if promote:
                    await self._promote_locked(alias, adapter)
            except Exception:
                # A name with no loaded version is counted under one shared label, so
                # failed loads of arbitrary names add no series.
                known = any(a.name == name for a in self._versions.values())
                self._telemetry.swaps.labels(name if known else NEW_ADAPTER, "failed").inc()
                raise
            if promote:
                self._telemetry.swaps.labels(name, "ok").inc()
                self._telemetry.swap_seconds.labels(name).observe(self._clock() - started)
        return adapter

    async def _load_locked(self, name: str, version: str) -> LoadedAdapter:
        ref = f"{name}@{version}"
        existing = self._versions.get(ref)
        if existing is not None:
            existing.retired = False  # re-promoting a draining version keeps it
            return existing
        path = adapter_dir(self.root, name, version)
        manifest = read_manifest(self.root, path, name, version)
        engine = self._engine_for(manifest, ref)
        lora = LoraRef(name=ref, lora_id=next(self._ids), path=path)
        try:
            await engine.add_lora(lora)
        except LoraLoadError as exc:
            raise AdapterError(f"engine could not load {ref}: {exc}", code="engine_load_failed") from exc
        except EngineDead as exc:
            raise Unavailable(f"cannot load {ref} now: {exc}", code="engine_unavailable") from exc
        adapter = LoadedAdapter(name, version, manifest, lora, loaded_at=self._clock(), engine_lora=lora)
        adapter.drained.set()
        try:
            await self._folds.serve_loaded(engine, adapter)
        except Exception:
            await engine.remove_lora(lora.lora_id)
            raise
        self._versions[ref] = adapter  # only after the engine said yes
        self._telemetry.adapter_loaded.labels(name, version, manifest.served_base).set(1)
        log.info("loaded adapter %s as LoRA id %d on %s", ref, lora.lora_id, manifest.served_base)
        return adapter

    def _engine_for(self, manifest: AdapterManifest, ref: str) -> EngineClient:
        engine = self._engines.get(manifest.served_base)
        if engine is None:
            raise AdapterError(
                f"{ref} is for base {manifest.served_base!r}, which no engine serves",
                code="base_mismatch",
            )
        check_fits_engine(manifest, ref, engine.info)
        return engine

    async def promote(self, alias: str, ref: str) -> LoadedAdapter:
        check_segment("alias", alias)
        adapter = self.resolve(ref if "@" in ref else f"{ref}@{self.latest_version(ref)}")
        started = self._clock()
        async with self._locked(adapter.name):
            try:
                await self._promote_locked(alias, adapter)
            except Exception:
                self._telemetry.swaps.labels(adapter.name, "failed").inc()
                raise
        self._telemetry.swaps.labels(adapter.name, "ok").inc()
        self._telemetry.swap_seconds.labels(adapter.name).observe(self._clock() - started)
        return adapter

    async def _promote_locked(self, alias: str, adapter: LoadedAdapter) -> None:
        """Point ``alias`` at ``adapter``; the adapter's own alias also moves the fold (in the
        background: the flip does not wait for it)."""
        if self._folds.on and alias == adapter.name:
            self._folds.want(adapter.base, adapter)  # before the flip: the old version's unload sees it
        self._flip(alias, adapter)

    def _flip(self, alias: str, adapter: LoadedAdapter) -> None:
        old_ref = self._aliases.get(alias)
        self._aliases[alias] = adapter.ref
        self._telemetry.set_alias(alias, adapter.name, adapter.version)
        if old_ref is not None and old_ref != adapter.ref:
            log.info("alias %s: %s -> %s", alias, old_ref, adapter.ref)
            self._retire_if_unused(old_ref)

    def _retire_if_unused(self, ref: str) -> None:
        old = self._versions.get(ref)
        if old is None or self.aliases_of(ref):
            return
        old.retired = True
        if old.inflight == 0:
            self._schedule_unload(old)

    async def unload(self, ref: str) -> LoadedAdapter:
        """Unload a version no alias serves; in-flight requests on it finish first."""
        adapter = self.resolve(ref)
        if self.aliases_of(ref):
            raise Conflict(
                f"{ref} serves alias(es) {self.aliases_of(ref)}; promote another version first",
                code="adapter_in_use",
            )
        self._retire_if_unused(ref)
        await adapter.drained.wait()
        await self.wait_unloaded()
        return adapter

    def remove_alias(self, alias: str) -> None:
        ref = self._aliases.pop(alias, None)
        if ref is None:
            raise NotFound(f"no alias {alias!r}", code="alias_not_found")
        self._telemetry.drop_alias(alias)
        version = self._versions.get(ref)
        if version is not None and alias == version.name and self._folds.on:
            self._folds.drop_target(version.base, version)
        self._retire_if_unused(ref)

    def _schedule_unload(self, adapter: LoadedAdapter) -> None:
        task = asyncio.get_running_loop().create_task(self._unload_now(adapter))
        self._unloads.add(task)
        task.add_done_callback(self._unloads.discard)

    async def _unload_now(self, adapter: LoadedAdapter) -> None:
        async with self._locked(adapter.name):
            if not adapter.retired or adapter.inflight or self._versions.get(adapter.ref) is not adapter:
                return  # re-promoted, re-acquired or already gone meanwhile
            if self._folds.folded(adapter.base) is adapter:  # its fold task moves the weights off it
                self._folds.drop_target(adapter.base, adapter)
                await self._folds.settle(adapter.base)
                if self._folds.folded(adapter.base) is adapter:
                    log.error("%s stays loaded: it is still folded into %s's weights", adapter.ref, adapter.base)
                    adapter.retired = False
                    return
            del self._versions[adapter.ref]
            self._telemetry.forget_version(adapter.name, adapter.version, adapter.base)
            await self._folds.forget(adapter)
            try:
                await self._engines[adapter.base].remove_lora(adapter.lora.lora_id)
                log.info("unloaded adapter %s (LoRA id %d)", adapter.ref, adapter.lora.lora_id)
            except Exception:
                log.exception("engine failed to unload %s; dropped from the registry", adapter.ref)

    async def reattach(self, base: str, engine: EngineClient) -> list[str]:
        """``base``'s engine was replaced by ``engine``: load every version it served there
        under a fresh LoRA id, keeping the aliases. Retiring versions lost their requests with
        the old engine and are dropped; so is a version that no longer loads, with its aliases
        (requests for them then get 404, not a dead adapter). Returns the refs reloaded."""
        reloaded = []
        refold = self._folds.reset(base)  # the new engine is pristine
        for adapter in [a for a in self.loaded() if a.base == base]:
            async with self._locked(adapter.name):
                if self._versions.get(adapter.ref) is not adapter:
                    continue
                if adapter.retired:
                    self._drop(adapter)
                    continue
                lora = LoraRef(name=adapter.ref, lora_id=next(self._ids), path=adapter.lora.path)
                try:
                    await engine.add_lora(lora)
                except Exception as exc:
                    log.error("reloading %s on the new %s engine failed: %s", adapter.ref, base, exc)
                    self._drop(adapter)
                    continue
                adapter.lora = adapter.engine_lora = lora
                reloaded.append(adapter.ref)
        if refold is not None and self._versions.get(refold.ref) is refold:
            try:
                await self._folds.refold(base, refold, engine=engine)  # not installed yet
            except Exception as exc:
                log.error("re-folding %s on the new %s engine failed: %s", refold.ref, base, exc)
        return reloaded

    def _drop(self, adapter: LoadedAdapter) -> None:
        for alias in self.aliases_of(adapter.ref):
            del self._aliases[alias]
            self._telemetry.drop_alias(alias)
        del self._versions[adapter.ref]
        self._telemetry.forget_version(adapter.name, adapter.version, adapter.base)

    # -- folding ----------------------------------------------------------------------------

    def folded(self, base: str) -> LoadedAdapter | None:
        """The version folded into ``base``'s weights, if any."""
        return self._folds.folded(base)

    def fold_of(self, base: str) -> BaseFold[LoadedAdapter]:
        """``base``'s fold state (its gate, target, last phases and error)."""
        return self._folds.of(base)

    async def settled(self, base: str | None = None) -> None:
        """Wait until the weights of ``base`` (every base) hold what the promotes asked."""
        await self._folds.settle(base)

    async def unfold(self, base: str) -> None:
        """Return ``base``'s weights to the pristine ones; every version served by its LoRA."""
        await self._folds.refold(base, None)

    async def wait_unloaded(self) -> None:
        """Wait for pending unloads (tests and shutdown)."""
        while self._unloads:
            await asyncio.gather(*list(self._unloads), return_exceptions=True)

    # -- watching the root ----------------------------------------------------------------

    async def scan_once(self) -> list[str]:
        """Swap every served adapter name to its newest version on disk; return new refs.

        A version that failed to load is not retried until its directory changes name."""
        swapped = []
        for alias, ref in list(self._aliases.items()):
            name = ref.split("@", 1)[0]
            if alias != name:
                continue  # only the adapter's own alias follows the root
            try:
                newest = self.latest_version(name)
            except NotFound:
                continue
            candidate = f"{name}@{newest}"
            if candidate == ref or candidate in self._watch_failed:
                continue
            try:
                await self.load(name, newest, promote=True)
                swapped.append(candidate)
            except Exception as exc:
                self._watch_failed.add(candidate)
                log.warning("watcher: %s not loaded: %s", candidate, exc)
        return swapped

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.scan_once()
            except Exception:
                log.exception("adapter watcher scan failed")
