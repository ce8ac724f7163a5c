"""Every base's fold, and the one task per base that moves it (``service.adapters`` asks;
``service.fold`` has the math and the reasons).

A promote does not wait for the weights: the alias flips at once to the new version, which is
then served *exactly* through its LoRA against whatever is folded now (its difference LoRA, or
its plain LoRA when nothing is). The base's fold task then moves the weights to the version its
own alias serves (the *target*): it prepares the new state while serving goes on (the fold
checked and the weights it touches copied to the host, every other version's difference LoRA
against the target written and loaded), closes the base's gate (new requests wait in
``AdapterRegistry.acquire``, none fails), waits for the base's in-flight requests to finish,
folds, switches every version's engine LoRA in one step (no ``await`` between), and opens the
gate. A request thus runs entirely under one fold and the LoRAs that match it. A fold that
fails leaves the engine on its previous fold, every version still served exactly, and is
counted (``forecast_adapter_fold_failures``) and logged; the next promote tries again.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from service.engine import EngineClient, EngineDead, FoldFailed, LoraLoadError, LoraRef
from service.errors import AdapterError, Unavailable
from service.fold import FoldError, write_difference
from service.telemetry import Telemetry

log = logging.getLogger(__name__)


class Foldable(Protocol):
    """What the fold needs of a loaded version (``service.adapters.LoadedAdapter``)."""

    lora: LoraRef
    engine_lora: LoraRef | None

    @property
    def ref(self) -> str: ...

    @property
    def base(self) -> str: ...

    @property
    def rank(self) -> int: ...


V = TypeVar("V", bound=Foldable)


@dataclass
class BaseFold(Generic[V]):
    """One base's fold: the version folded, the one its fold task moves to, the other
    versions' difference LoRAs, and the gate that holds new requests while the weights change."""

    folded: V | None = None
    target: V | None = None
    differences: dict[str, LoraRef] = field(default_factory=dict)  # ref -> LoRA vs folded
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    open: asyncio.Event = field(default_factory=asyncio.Event)  # set: requests may start
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set: none in flight
    inflight: int = 0
    task: asyncio.Task[None] | None = None
    error: BaseException | None = None  # the last fold's failure, None after a success
    phases: dict[str, float] = field(default_factory=dict)  # the last fold's phase seconds

    def __post_init__(self) -> None:
        self.open.set()
        self.idle.set()


class Folds(Generic[V]):
    """The folds of every base of one registry. ``versions(base)``: the versions loaded on it."""

    def __init__(
        self, fold_dir: Path | None, engines: Mapping[str, EngineClient], telemetry: Telemetry,
        ids: Iterator[int], versions: Callable[[str], list[V]], drain_timeout_s: float,
    ) -> None:
        self.dir = fold_dir  # None: folding off
        self._engines, self._telemetry, self._ids = engines, telemetry, ids
        self._versions, self._drain_timeout_s = versions, drain_timeout_s
        self._folds: dict[str, BaseFold[V]] = {}

    @property
    def on(self) -> bool:
        return self.dir is not None

    def of(self, base: str) -> BaseFold[V]:
        return self._folds.setdefault(base, BaseFold[V]())

    def folded(self, base: str) -> V | None:
        fold = self._folds.get(base)
        return fold.folded if fold is not None else None

    # -- moving the fold --------------------------------------------------------------------

    def want(self, base: str, target: V | None) -> None:
        """Fold ``target`` (None: nothing) into ``base``'s weights, in the background."""
        fold = self.of(base)
        fold.target = target
        if fold.task is None or fold.task.done():
            fold.task = asyncio.get_running_loop().create_task(self._work(base))

    def drop_target(self, base: str, version: V) -> None:
        """``version`` no longer serves its own alias: fold nothing instead (if it was wanted)."""
        if self.of(base).target is version:
            self.want(base, None)

    async def settle(self, base: str | None = None) -> None:
        """Wait until the fold tasks (of ``base``; of every base) have finished."""
        for fold in [self.of(base)] if base is not None else list(self._folds.values()):
            while fold.task is not None and not fold.task.done():
                await asyncio.shield(fold.task)

    async def refold(self, base: str, target: V | None, engine: EngineClient | None = None) -> None:
        """Fold ``target`` now and wait; raises what the fold raised. ``engine``: the base's
        engine (default: the one serving it now)."""
        fold = self.of(base)
        fold.target = target
        async with fold.lock:
            await self._refold(base, target, engine)

    def reset(self, base: str) -> V | None:
        """``base``'s engine was replaced by a pristine one: forget its fold; return the version
        its weights should hold (the caller folds it on the new engine)."""
        fold = self.of(base)
        fold.folded, fold.differences = None, {}
        self._telemetry.set_folded(base, None)
        return fold.target

    async def _work(self, base: str) -> None:
        fold = self.of(base)
        while True:
            async with fold.lock:
                target = fold.target
                if target is fold.folded:
                    return
                try:
                    await self._refold(base, target)
                except Exception as exc:
                    self._telemetry.fold_failures.labels(base).inc()
                    log.error("folding %s into %s failed; the weights stay as they were, every "
                              "version served exactly: %s", getattr(target, "ref", "nothing"), base, exc)
                    if fold.target is target:
                        return  # not retried until another promote asks

    async def _refold(self, base: str, target: V | None, engine: EngineClient | None = None) -> None:
        """Prepare, close the gate, drain, fold, switch every version's engine LoRA with no
        await in between, open the gate. The caller holds the base's lock."""
        fold = self.of(base)
        engine = engine or self._engines[base]
        if fold.folded is target:
            return
        others = [v for v in self._versions(base) if v is not target]
        fresh: dict[str, LoraRef] = {}
        phases: dict[str, float] = {}
        mark = time.perf_counter()

        def lap(phase: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            phases[phase], mark = now - mark, now

        what = target.ref if target is not None else "nothing"
        try:
            if target is not None:
                for other in others:
                    check_difference_rank(engine, other.ref, other.rank, target.ref, target.rank)
                await fold_call(engine.prepare_fold(target.lora.path), what)
                lap("prepare")
                for other in others:
                    fresh[other.ref] = await self._load_difference(engine, other, target)
                lap("differences")
            await self._drain(base, fold)
            lap("drain")
            await fold_call(engine.fold(target.lora.path if target is not None else None), what)
            lap("fold")
            for other in others:  # from here to the gate opening: no await
                other.engine_lora = fresh.get(other.ref, other.lora)
            if target is not None:
                target.engine_lora = None
            stale, fold.differences, fold.folded = fold.differences, fresh, target
            self._telemetry.set_folded(base, target.ref if target is not None else None)
        except BaseException as exc:
            fold.error = exc
            for lora in fresh.values():
                await drop_difference(engine, lora)
            raise
        finally:
            fold.open.set()
        fold.error = None
        for lora in stale.values():  # after the gate opened: no request waits for this
            await drop_difference(engine, lora)
        lap("cleanup")
        fold.phases = phases
        for phase, seconds in phases.items():
            self._telemetry.fold_seconds.labels(base, phase).observe(seconds)
        log.info("%s weights now fold %s (%s)", base, what,
                 ", ".join(f"{p} {s:.2f} s" for p, s in phases.items()))

    async def _drain(self, base: str, fold: BaseFold[V]) -> None:
        fold.open.clear()
        try:
            await asyncio.wait_for(fold.idle.wait(), self._drain_timeout_s)
        except TimeoutError:
            raise Unavailable(
                f"requests on {base} did not finish within {self._drain_timeout_s:g} s; "
                "the fold was not changed", code="fold_drain_timeout",
            ) from None

    # -- versions next to a fold --------------------------------------------------------------

    async def serve_loaded(self, engine: EngineClient, version: V) -> None:
        """A version just loaded is served by its difference LoRA while another is folded
        (under the base's lock: no fold changes meanwhile)."""
        fold = self.of(version.base)
        async with fold.lock:
            folded = fold.folded
            if folded is None:
                return
            check_difference_rank(engine, version.ref, version.rank, folded.ref, folded.rank)
            lora = await self._load_difference(engine, version, folded)
            fold.differences[version.ref] = version.engine_lora = lora

    async def forget(self, version: V) -> None:
        """``version`` is unloaded: drop its difference LoRA, if it has one."""
        difference = self.of(version.base).differences.pop(version.ref, None)
        if difference is not None:
            await drop_difference(self._engines[version.base], difference)

    async def _load_difference(self, engine: EngineClient, version: V, folded: V) -> LoraRef:
        assert self.dir is not None
        return await load_difference(engine, self.dir / version.base, (version.ref, version.lora.path),
                                     (folded.ref, folded.lora.path), next(self._ids))


def check_difference_rank(engine: EngineClient, ref: str, rank: int, folded_ref: str, folded_rank: int) -> None:
    """A version next to a folded one needs a LoRA of both ranks: refuse it beyond the engine's."""
    if rank + folded_rank > engine.info.max_lora_rank:
        raise AdapterError(
            f"serving {ref} next to folded {folded_ref} needs LoRA rank {rank + folded_rank} > "
            f"engine max_lora_rank {engine.info.max_lora_rank}: raise it or turn folding off",
            code="rank_too_large",
        )


async def fold_call(call: Awaitable[None], what: str) -> None:
    """Await an engine fold call with its errors in the service's terms."""
    try:
        await call
    except (FoldFailed, FoldError) as exc:
        raise AdapterError(f"cannot fold {what}: {exc}", code="fold_failed") from exc
    except EngineDead as exc:
        raise Unavailable(f"cannot fold {what} now: {exc}", code="engine_unavailable") from exc


async def load_difference(
    engine: EngineClient, folder: Path, version: tuple[str, Path], folded: tuple[str, Path], lora_id: int
) -> LoraRef:
    """Write ``version``'s difference LoRA against ``folded`` (each ``(ref, path)``) under
    ``folder`` and load it into ``engine`` as LoRA ``lora_id``."""
    name = f"{version[0]}-minus-{folded[0]}.{lora_id}"
    dest = folder / name
    try:
        await asyncio.to_thread(write_difference, version[1], folded[1], dest)
    except (FoldError, OSError, ValueError) as exc:
        raise AdapterError(f"cannot build {name}: {exc}", code="fold_failed") from exc
    lora = LoraRef(name=name, lora_id=lora_id, path=dest)
    try:
        await engine.add_lora(lora)
    except LoraLoadError as exc:
        await asyncio.to_thread(shutil.rmtree, dest, True)
        raise AdapterError(f"engine could not load {name}: {exc}", code="engine_load_failed") from exc
    except EngineDead as exc:
        await asyncio.to_thread(shutil.rmtree, dest, True)
        raise Unavailable(f"cannot load {name} now: {exc}", code="engine_unavailable") from exc
    return lora


async def drop_difference(engine: EngineClient, lora: LoraRef) -> None:
    """Unload a difference LoRA and delete its directory (a failure is logged, not raised)."""
    try:
        await engine.remove_lora(lora.lora_id)
    except Exception:
        log.exception("engine failed to unload difference LoRA %s", lora.name)
    await asyncio.to_thread(shutil.rmtree, lora.path, True)
