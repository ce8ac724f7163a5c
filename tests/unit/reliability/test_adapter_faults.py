"""A hot-swap whose load fails while forecasts are in flight changes nothing: the in-flight
forecasts finish on the old version, the alias still points at it, new forecasts use it, and
no adapter is left half-loaded in the engine. (tests/unit/service covers the idle case.)"""

from __future__ import annotations

import asyncio
from typing import Any

from reliability_harness import logged_forecasts, wait_until

from service.testing import error_of

BODY = {"ticker": "KO", "adapter": "fingpt-llama"}


async def test_a_failed_swap_under_load_keeps_the_old_version_serving(
    serve: Any, engines: Any, admin: dict[str, str]
) -> None:
    llama = engines["llama"]
    llama.fail_loads.add("fingpt-llama@v2")
    async with serve() as client:
        loras = set(llama.loras)
        llama.gate = asyncio.Event()
        held = [asyncio.create_task(client.post("/v1/forecast", json=BODY)) for _ in range(6)]
        await wait_until(lambda: llama.running == 6)
        swap = await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2"}, headers=admin)
        llama.gate.set()
        results = await asyncio.gather(*held)
        after = await client.post("/v1/forecast", json=BODY)
        aliases = (await client.get("/v1/adapters", headers=admin)).json()["aliases"]
        rows = logged_forecasts(client)
    assert swap.status_code == 422 and error_of(swap)["code"] == "engine_load_failed"
    assert [r.status_code for r in results] == [200] * 6
    assert {r.json()["adapter"] for r in [*results, after]} == {"fingpt-llama@v1"}
    assert aliases["fingpt-llama"] == "fingpt-llama@v1"
    assert set(llama.loras) == loras and rows == 7
