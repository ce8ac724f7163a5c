"""The registry's folding helpers: one base's fold state, difference LoRAs in and out of the
engine, and the engine's fold errors mapped onto the service's (``service.adapters`` drives
them; ``service.fold`` has the math and the reasons)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from service.engine import EngineClient, EngineDead, FoldFailed, LoraLoadError, LoraRef
from service.errors import AdapterError, Unavailable
from service.fold import FoldError, write_difference

log = logging.getLogger(__name__)

Version = TypeVar("Version")  # the registry's loaded version


@dataclass
class BaseFold(Generic[Version]):
    """One base's fold: the version folded, the other versions' difference LoRAs, and the gate
    that holds new requests while the weights change."""

    folded: Version | None = None
    differences: dict[str, LoraRef] = field(default_factory=dict)  # ref -> LoRA vs folded
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    open: asyncio.Event = field(default_factory=asyncio.Event)  # set: requests may start
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set: none in flight
    inflight: int = 0

    def __post_init__(self) -> None:
        self.open.set()
        self.idle.set()


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
