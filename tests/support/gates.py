"""Gates instead of timing: hold a real engine's generations at a known point until the test
lets them go, so a race the test is about happens in one order on any machine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from service.engine import Chunk, EngineClient, GenerationParams, LoraRef

BOUND_S = 300.0  # how long a condition may take on a loaded 2-core host: a bound, never a claim


async def until(predicate: Callable[[], bool], what: str, bound_s: float = BOUND_S) -> None:
    """Wait for ``predicate``; fail (naming ``what``) if it is not true within ``bound_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {bound_s:g} s: {what}")
        await asyncio.sleep(0.01)


class HeldGenerations:
    """Wraps one engine's ``generate``: a generation that ``hold`` picks has produced its first
    chunk on the engine, then waits for :meth:`release` before handing it on. ``held`` counts
    the generations waiting at the gate now; ``passed`` those that went through unheld."""

    def __init__(self, engine: EngineClient, hold: Callable[[LoraRef | None], bool]) -> None:
        self._generate = engine.generate
        self._hold = hold
        self._open = asyncio.Event()
        self.held = 0
        self.passed = 0

    def release(self) -> None:
        self._open.set()

    async def generate(
        self, prompt: str, params: GenerationParams, lora: LoraRef | None, request_id: str
    ) -> AsyncIterator[Chunk]:
        first = True
        async for chunk in self._generate(prompt, params, lora, request_id):
            if first:
                first = False
                if self._hold(lora) and not self._open.is_set():
                    self.held += 1
                    try:
                        await self._open.wait()
                    finally:
                        self.held -= 1
                else:
                    self.passed += 1
            yield chunk


@contextmanager
def held_generations(
    engine: Any, hold: Callable[[LoraRef | None], bool]
) -> Iterator[HeldGenerations]:
    """Install a :class:`HeldGenerations` gate on ``engine`` (the instance, real or fake) for
    the block; the gate is released and removed on exit, also when the block failed."""
    gate = HeldGenerations(engine, hold)
    engine.generate = gate.generate
    try:
        yield gate
    finally:
        gate.release()
        del engine.generate  # the class's method again
