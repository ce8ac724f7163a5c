"""Hung engines: an engine that is alive but whose requests get no token for ``engine_stall_s``
is treated as dead — the waiting request gets 503 ``engine_stalled`` with Retry-After, the
supervisor restarts the engine and the next request succeeds — while a slow engine that keeps
producing tokens is left alone. The watch's clock is the test's, so no test waits for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from reliability_harness import wait_until
from test_engine_supervisor import KO_LLAMA, Starter, supervisor_of

from service.engine import Chunk, GenerationParams, LoraRef
from service.testing import FakeEngine, error_of
from service.watchdog import EngineStalled, StallWatch

STALL_S = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SteppedEngine(FakeEngine):
    """A FakeEngine that produces one word per permit from ``steps``: slow, but progressing."""

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.steps = asyncio.Semaphore(0)
        self.words = 0

    async def generate(
        self, prompt: str, params: GenerationParams, lora: LoraRef | None, request_id: str
    ) -> AsyncIterator[Chunk]:
        async for chunk in super().generate(prompt, params, lora, request_id):
            await self.steps.acquire()
            self.words += 1
            yield chunk


def watched_clock(client: Any) -> Clock:
    clock = Clock()
    client.app.state.service.stall_watch.clock = clock
    return clock


async def test_a_hung_engine_gets_503_and_is_restarted(serve: Any, engines: Any) -> None:
    starter = Starter()
    llama = engines["llama"]
    async with serve(restart=starter, engine_check_s=0.01, engine_stall_s=STALL_S) as client:
        clock = watched_clock(client)
        supervisor = supervisor_of(client)
        llama.gate = asyncio.Event()  # alive and healthy, but no token ever comes
        held = asyncio.create_task(client.post("/v1/forecast", json=KO_LLAMA))
        await wait_until(lambda: llama.running == 1)
        clock.now += STALL_S - 1
        assert await supervisor.check_once() == [] and not held.done()
        clock.now += 1  # the stall time has passed with no token
        r = await held  # the supervisor's own loop found it
        await wait_until(lambda: starter.calls == ["llama"])
        await supervisor.wait_restarted()
        after = await client.post("/v1/forecast", json=KO_LLAMA)
        metrics = (await client.get("/metrics")).text
        llama.gate.set()

    assert r.status_code == 503 and error_of(r)["code"] == "engine_stalled"
    assert r.headers["Retry-After"] == "2"
    assert llama.running == 0 and llama.dead  # its generation ended, the engine closed
    assert after.status_code == 200 and starter.started[0].used[-1] == "fingpt-llama@v1"
    assert 'forecast_engine_stall_restarts_total{base="llama"} 1.0' in metrics
    assert 'forecast_engine_restarts_total{base="llama",result="ok"} 1.0' in metrics


async def test_a_slow_engine_that_progresses_is_not_killed(serve: Any, engines: Any) -> None:
    starter = Starter()
    engines["llama"] = slow = SteppedEngine("llama")
    async with serve(restart=starter, engine_check_s=0.01, engine_stall_s=STALL_S) as client:
        clock = watched_clock(client)
        supervisor = supervisor_of(client)
        held = asyncio.create_task(client.post("/v1/forecast", json=KO_LLAMA))
        await wait_until(lambda: slow.running == 1)
        for word in range(1, 6):  # five words, 50 s apart: 250 s in all, never 60 s silent
            clock.now += 50
            slow.steps.release()
            await wait_until(lambda w=word: slow.words == w)
            assert await supervisor.check_once() == []
        slow.steps, held_step = asyncio.Semaphore(1000), slow.steps  # the rest of the answer
        held_step.release()
        r = await held
        metrics = (await client.get("/metrics")).text

    assert r.status_code == 200, r.text
    assert starter.calls == [] and not slow.dead
    assert 'forecast_engine_stall_restarts_total{base="llama"}' not in metrics


async def test_without_a_restart_hook_a_hung_engine_still_answers_503(
    serve: Any, engines: Any
) -> None:
    llama = engines["llama"]
    async with serve(engine_check_s=0.01, engine_stall_s=STALL_S) as client:
        clock = watched_clock(client)
        llama.gate = asyncio.Event()
        held = asyncio.create_task(client.post("/v1/forecast", json=KO_LLAMA))
        await wait_until(lambda: llama.running == 1)
        clock.now += STALL_S
        r = await held
        llama.gate.set()
    assert r.status_code == 503 and error_of(r)["code"] == "engine_stalled"


async def _words(n: int, gate: asyncio.Event | None = None) -> AsyncIterator[Chunk]:
    for i in range(n):
        if gate is not None:
            await gate.wait()
            gate.clear()
        yield Chunk(delta=f"w{i}", tokens=i + 1, finished=i == n - 1)


async def test_progress_is_any_token_of_any_request_of_the_engine() -> None:
    clock = Clock()
    watch = StallWatch(STALL_S, clock=clock)
    assert watch.stalled() == []
    clock.now += 10 * STALL_S  # nothing in flight: never stalled

    silent, talking = asyncio.Event(), asyncio.Event()
    waiting = asyncio.create_task(_drain(watch.chunks("llama", _words(1, silent))))
    producing = asyncio.create_task(_drain(watch.chunks("llama", _words(50, talking))))
    other = asyncio.create_task(_drain(watch.chunks("deepseek", _words(1, asyncio.Event()))))
    await asyncio.sleep(0)
    for _ in range(3):  # the waiting request is covered by its neighbour's tokens
        clock.now += STALL_S - 1
        talking.set()
        await asyncio.sleep(0)
        assert "llama" not in watch.stalled()
    assert watch.stalled() == ["deepseek"]  # its one request waited 177 s with no token
    assert watch.fail("deepseek") == 1
    with pytest.raises(EngineStalled):
        await other
    clock.now += STALL_S  # now nobody on llama produces
    assert watch.stalled() == ["llama"]
    assert watch.fail("llama") == 2
    for task in (waiting, producing):
        with pytest.raises(EngineStalled):
            await task
    assert watch.stalled() == []


async def _drain(chunks: AsyncIterator[Chunk]) -> int:
    return len([c async for c in chunks])
