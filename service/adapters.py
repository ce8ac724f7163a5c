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
difference LoRA against the folded one (``LoadedAdapter.engine_lora``). A promote prepares the
new state first (the new fold checked and its weights copied, the difference LoRAs written and
loaded), then closes the base's gate (new requests wait in :meth:`AdapterRegistry.acquire`,
none fails), waits for the base's in-flight requests to finish, folds, switches every
version's engine LoRA and the alias in one step, and opens the gate. A request thus runs
entirely under one fold and the LoRAs that match it. A failed fold leaves the engine on its
previous fold and the registry as it was (the new version stays loaded, not promoted).
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
from service.folding import (
    BaseFold,
    check_difference_rank,
    drop_difference,
    fold_call,
    load_difference,
)
from service.manifest import (
    AdapterManifest,
    adapter_dir,
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
        self._fold_dir = fold_dir  # None: folding off
        self._fold_drain_timeout_s = fold_drain_timeout_s
        self._folds: dict[str, BaseFold[LoadedAdapter]] = {}

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
        while not (gate := self._fold_of(adapter.base).open).is_set():
            await gate.wait()
            adapter = self.resolve(target)
        # resolve and count with no await in between
        fold = self._fold_of(adapter.base)
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
            await self._difference_if_folded(engine, adapter)
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
        info = engine.info
        if manifest.base_model != info.model_id:
            raise AdapterError(
                f"{ref} was trained on {manifest.base_model!r}; the {info.base} engine runs "
                f"{info.model_id!r}",
                code="base_mismatch",
            )
        if manifest.chat_format != info.chat_format:
            raise AdapterError(
                f"{ref} expects chat format {manifest.chat_format}; the {info.base} engine "
                f"renders {info.chat_format}",
                code="chat_format_mismatch",
            )
        if manifest.lora.r > info.max_lora_rank:
            raise AdapterError(
                f"{ref} has LoRA rank {manifest.lora.r} > engine max_lora_rank {info.max_lora_rank}",
                code="rank_too_large",
            )
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
        """Point ``alias`` at ``adapter``; the adapter's own alias also moves the fold."""
        if self._fold_dir is None or alias != adapter.name:
            self._flip(alias, adapter)
            return
        fold = self._fold_of(adapter.base)
        async with fold.lock:
            await self._refold(adapter.base, adapter, lambda: self._flip(alias, adapter))

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
        self._retire_if_unused(ref)

    def _schedule_unload(self, adapter: LoadedAdapter) -> None:
        task = asyncio.get_running_loop().create_task(self._unload_now(adapter))
        self._unloads.add(task)
        task.add_done_callback(self._unloads.discard)

    async def _unload_now(self, adapter: LoadedAdapter) -> None:
        async with self._locked(adapter.name):
            if not adapter.retired or adapter.inflight or self._versions.get(adapter.ref) is not adapter:
                return  # re-promoted, re-acquired or already gone meanwhile
            fold = self._fold_of(adapter.base)
            if fold.folded is adapter:
                async with fold.lock:
                    if fold.folded is adapter:  # no alias serves it any more: back to the base
                        try:
                            await self._refold(adapter.base, None)
                        except Exception:
                            log.exception("un-folding %s failed; it stays folded", adapter.ref)
                            adapter.retired = False
                            return
            del self._versions[adapter.ref]
            self._telemetry.forget_version(adapter.name, adapter.version, adapter.base)
            difference = fold.differences.pop(adapter.ref, None)
            if difference is not None:
                await drop_difference(self._engines[adapter.base], difference)
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
        fold = self._fold_of(base)
        refold, fold.folded, fold.differences = fold.folded, None, {}  # the new engine is pristine
        self._telemetry.set_folded(base, None)
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
            async with fold.lock:
                try:
                    await self._refold(base, refold, engine=engine)  # not installed yet
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

    def _fold_of(self, base: str) -> BaseFold[LoadedAdapter]:
        return self._folds.setdefault(base, BaseFold[LoadedAdapter]())

    def folded(self, base: str) -> LoadedAdapter | None:
        """The version folded into ``base``'s weights, if any."""
        fold = self._folds.get(base)
        return fold.folded if fold is not None else None

    async def unfold(self, base: str) -> None:
        """Return ``base``'s weights to the pristine ones; every version served by its LoRA."""
        fold = self._fold_of(base)
        async with fold.lock:
            await self._refold(base, None)

    async def _refold(
        self, base: str, target: LoadedAdapter | None, flip: Callable[[], None] | None = None,
        engine: EngineClient | None = None,
    ) -> None:
        """Fold ``target`` (None: none) into ``base``'s weights, then call ``flip``; the
        caller holds the base's fold lock. Prepare, close the gate, drain, fold, switch every
        version's engine LoRA (and ``flip``) with no await in between, open the gate.
        ``engine``: the base's engine (default: the one serving it now)."""
        fold = self._fold_of(base)
        engine = engine or self._engines[base]
        if fold.folded is target:
            if flip is not None:
                flip()
            return
        others = [a for a in self._versions.values() if a.base == base and a is not target]
        fresh: dict[str, LoraRef] = {}
        try:
            if target is not None:
                for other in others:
                    check_difference_rank(engine, other.ref, other.manifest.lora.r, target.ref, target.manifest.lora.r)
                await fold_call(engine.prepare_fold(target.lora.path), target.ref)
                for other in others:
                    fresh[other.ref] = await self._load_difference(engine, other, target)
            await self._drain(base, fold)
            await fold_call(engine.fold(target.lora.path if target else None), target.ref if target else "nothing")
            for other in others:  # from here to the gate opening: no await
                other.engine_lora = fresh.get(other.ref, other.lora)
            if target is not None:
                target.engine_lora = None
            stale, fold.differences, fold.folded = fold.differences, fresh, target
            self._telemetry.set_folded(base, target.ref if target is not None else None)
            log.info("%s weights now fold %s", base, target.ref if target else "nothing")
            if flip is not None:
                flip()
        except BaseException:
            for lora in fresh.values():
                await drop_difference(engine, lora)
            raise
        finally:
            fold.open.set()
        for lora in stale.values():
            await drop_difference(engine, lora)

    async def _drain(self, base: str, fold: BaseFold[LoadedAdapter]) -> None:
        fold.open.clear()
        try:
            await asyncio.wait_for(fold.idle.wait(), self._fold_drain_timeout_s)
        except TimeoutError:
            raise Unavailable(
                f"requests on {base} did not finish within {self._fold_drain_timeout_s:g} s; "
                "the fold was not changed", code="fold_drain_timeout",
            ) from None

    async def _difference_if_folded(self, engine: EngineClient, adapter: LoadedAdapter) -> None:
        """A version loaded while another is folded is served by its difference LoRA."""
        fold = self._fold_of(adapter.base)
        if fold.folded is None:
            return
        async with fold.lock:
            folded = fold.folded
            if folded is None:
                return
            check_difference_rank(engine, adapter.ref, adapter.manifest.lora.r, folded.ref, folded.manifest.lora.r)
            lora = await self._load_difference(engine, adapter, folded)
            fold.differences[adapter.ref] = adapter.engine_lora = lora

    async def _load_difference(self, engine: EngineClient, other: LoadedAdapter, target: LoadedAdapter) -> LoraRef:
        assert self._fold_dir is not None
        return await load_difference(
            engine, self._fold_dir / other.base, (other.ref, other.lora.path), (target.ref, target.lora.path),
            next(self._ids),
        )

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
