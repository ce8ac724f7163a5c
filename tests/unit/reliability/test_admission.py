"""Admission beyond capacity: shed at once with 503 + Retry-After (no queue, the default), or
wait in a bounded first-come queue that hands each freed slot to the longest waiter and gives
up with 503 after a timeout — never an unbounded wait, never a lost slot."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from reliability_harness import logged_forecasts, wait_until

from service.admission import Admission
from service.errors import Unavailable
from service.testing import error_of


async def hold(admission: Admission, release: asyncio.Event, order: list[str], name: str) -> None:
    async with admission.slot():
        order.append(name)
        await release.wait()


async def test_without_a_queue_over_capacity_is_shed_at_once() -> None:
    admission = Admission(max_inflight=2, max_queued=0, queue_timeout_s=60, retry_after_s=3)
    release, order = asyncio.Event(), []
    held = [asyncio.create_task(hold(admission, release, order, n)) for n in "ab"]
    await wait_until(lambda: admission.inflight == 2)
    with pytest.raises(Unavailable) as shed:
        async with admission.slot():
            pass
    assert shed.value.code == "overloaded" and shed.value.headers == {"Retry-After": "3"}
    release.set()
    await asyncio.gather(*held)
    assert admission.inflight == 0


async def test_freed_slots_go_to_the_longest_waiter_and_a_full_queue_sheds() -> None:
    admission = Admission(max_inflight=1, max_queued=3, queue_timeout_s=60, retry_after_s=1)
    gates = {n: asyncio.Event() for n in "abcd"}
    order: list[str] = []
    tasks = {}
    for name in "abcd":  # a holds the slot; b, c, d queue in that order
        tasks[name] = asyncio.create_task(hold(admission, gates[name], order, name))
        await wait_until(lambda n=name: n in order or admission.queued == "abcd".index(n))
    with pytest.raises(Unavailable):  # 1 in flight, 3 queued: the 5th is shed at once
        async with admission.slot():
            pass
    for name in "abcd":
        gates[name].set()
        await tasks[name]
    assert order == ["a", "b", "c", "d"]
    assert admission.inflight == 0 and admission.queued == 0


async def test_a_waiter_gives_up_with_503_and_the_slot_is_not_lost() -> None:
    admission = Admission(max_inflight=1, max_queued=1, queue_timeout_s=0.05, retry_after_s=2)
    release, order = asyncio.Event(), []
    holder = asyncio.create_task(hold(admission, release, order, "a"))
    await wait_until(lambda: admission.inflight == 1)
    with pytest.raises(Unavailable, match="no forecast slot freed") as gave_up:
        async with admission.slot():
            pass
    assert gave_up.value.headers == {"Retry-After": "2"} and admission.queued == 0
    release.set()
    await holder
    assert admission.inflight == 0
    async with admission.slot():
        assert admission.inflight == 1


async def test_a_client_that_leaves_the_queue_passes_nothing_on() -> None:
    admission = Admission(max_inflight=1, max_queued=2, queue_timeout_s=60, retry_after_s=1)
    gate_a, gate_c, order = asyncio.Event(), asyncio.Event(), []
    a = asyncio.create_task(hold(admission, gate_a, order, "a"))
    await wait_until(lambda: order == ["a"])
    b = asyncio.create_task(hold(admission, asyncio.Event(), order, "b"))
    c = asyncio.create_task(hold(admission, gate_c, order, "c"))
    await wait_until(lambda: admission.queued == 2)
    b.cancel()  # the client went away while queued
    await asyncio.gather(b, return_exceptions=True)
    gate_a.set()
    await a
    await wait_until(lambda: order == ["a", "c"])
    gate_c.set()
    await c
    assert admission.inflight == 0 and admission.queued == 0


async def test_through_the_api_queued_forecasts_are_served_and_beyond_the_queue_shed(
    serve: Any, engines: Any
) -> None:
    llama = engines["llama"]
    llama.gate = asyncio.Event()
    body = {"ticker": "KO", "adapter": "fingpt-llama"}
    async with serve(max_inflight=2, max_queued=2, queue_timeout_s=60, retry_after_s=3) as client:
        admission = client.app.state.service.gateway.admission
        held = [asyncio.create_task(client.post("/v1/forecast", json=body)) for _ in range(4)]
        await wait_until(lambda: llama.running == 2 and admission.queued == 2)
        shed = await client.post("/v1/forecast", json=body)
        llama.gate.set()
        done = await asyncio.gather(*held)
        rows = logged_forecasts(client)
    assert shed.status_code == 503 and shed.headers["Retry-After"] == "3"
    assert error_of(shed)["code"] == "overloaded"
    assert [r.status_code for r in done] == [200] * 4 and rows == 4


# -- cases mutation testing showed unguarded (tests/MUTATION.md) ---------------------------


async def refused(admission: Admission) -> Unavailable:
    """The refusal of one more forecast, within a 20 s bound (a bound, never a timing claim:
    a refusal that waited for an hour-long queue timeout, or forever, fails on it)."""

    async def ask() -> None:
        async with admission.slot():
            pass

    task = asyncio.create_task(ask())
    done, _ = await asyncio.wait({task}, timeout=20)
    if not done:
        task.cancel()
        raise AssertionError("the forecast was neither admitted nor refused within 20 s")
    exc = task.exception()
    assert isinstance(exc, Unavailable), exc
    return exc


async def test_a_full_queue_sheds_at_once_not_after_the_queue_timeout() -> None:
    admission = Admission(max_inflight=1, max_queued=1, queue_timeout_s=3600, retry_after_s=1)
    release, order = asyncio.Event(), []
    held = [asyncio.create_task(hold(admission, release, order, n)) for n in "ab"]
    await wait_until(lambda: admission.inflight == 1 and admission.queued == 1)
    try:
        shed = await refused(admission)
        assert str(shed) == "over capacity (1 forecasts in flight)"
        assert shed.code == "overloaded" and admission.queued == 1
    finally:
        release.set()
        await asyncio.gather(*held)
    assert order == ["a", "b"] and admission.inflight == 0

