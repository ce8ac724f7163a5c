"""Engine supervision on FakeEngines: a dead engine turns readiness red, its requests get 503
with Retry-After, and it is restarted (with backoff) with its adapters reloaded under fresh
LoRA ids and the same aliases; then readiness is green again."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from reliability_harness import wait_until

from service.supervisor import EngineSupervisor
from service.testing import FakeEngine, error_of

KO_LLAMA = {"ticker": "KO", "adapter": "fingpt-llama"}


class Starter:
    """Starts FakeEngines on demand; ``gate`` holds a start, ``failures`` fail the next ones."""

    def __init__(self, failures: int = 0) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures = failures
        self.calls: list[str] = []
        self.started: list[FakeEngine] = []

    async def __call__(self, base: str) -> FakeEngine:
        self.calls.append(base)
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("injected start failure")
        engine = FakeEngine(base)
        self.started.append(engine)
        return engine


def supervisor_of(client: Any) -> EngineSupervisor:
    supervisor = client.app.state.service.supervisor
    assert supervisor is not None
    return supervisor  # type: ignore[no-any-return]


async def test_dead_engine_is_restarted_and_its_adapters_reloaded(
    serve: Any, engines: Any, admin: dict[str, str]
) -> None:
    starter = Starter()
    starter.gate.clear()  # hold the replacement so the restarting state can be observed
    async with serve(restart=starter, engine_check_s=0.01) as client:
        state = client.app.state.service  # type: ignore[attr-defined]
        before = {a.ref: a.lora.lora_id for a in state.registry.loaded()}
        assert (await client.post("/v1/forecast", json=KO_LLAMA)).status_code == 200

        engines["llama"].dead = True  # the engine process died
        await wait_until(lambda: starter.calls == ["llama"])
        ready = await client.get("/readyz")
        during = await client.post("/v1/forecast", json=KO_LLAMA)
        load = await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2"}, headers=admin)
        other = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-deepseek"})
        metrics_during = (await client.get("/metrics")).text

        starter.gate.set()
        await supervisor_of(client).wait_restarted()
        ready_after = await client.get("/readyz")
        after = await client.post("/v1/forecast", json=KO_LLAMA)
        listing = (await client.get("/v1/adapters", headers=admin)).json()
        metrics = (await client.get("/metrics")).text

    assert ready.status_code == 503 and error_of(ready)["code"] == "not_ready"
    assert "restarting" in error_of(ready)["message"] and ready.headers["Retry-After"]
    assert during.status_code == 503 and error_of(during)["code"] == "engine_restarting"
    assert during.headers["Retry-After"] == "2"
    assert load.status_code == 503 and error_of(load)["code"] == "engine_unavailable"
    assert other.status_code == 200  # the other base kept serving
    assert 'forecast_engine_up{base="llama"} 0.0' in metrics_during

    new = starter.started[0]
    assert state.engines["llama"] is new and ready_after.status_code == 200
    assert after.status_code == 200 and after.json()["adapter"] == "fingpt-llama@v1"
    assert new.used == [None, "fingpt-llama@v1"]  # the readiness probe, then the forecast
    assert listing["aliases"] == {"fingpt-llama": "fingpt-llama@v1", "fingpt-deepseek": "fingpt-deepseek@v1"}
    reloaded = {a["name"] + "@" + a["version"]: a["lora_id"] for a in listing["adapters"]}
    assert reloaded["fingpt-deepseek@v1"] == before["fingpt-deepseek@v1"]  # untouched
    assert reloaded["fingpt-llama@v1"] > max(before.values())  # fresh, never reused
    assert set(new.loras) == {reloaded["fingpt-llama@v1"]}
    assert 'forecast_engine_restarts_total{base="llama",result="ok"} 1.0' in metrics
    assert 'forecast_engine_up{base="llama"} 1.0' in metrics


async def test_failed_starts_are_retried_with_backoff(serve: Any, engines: Any) -> None:
    starter = Starter(failures=2)
    async with serve(restart=starter, engine_check_s=0.01, restart_backoff_s=0.01) as client:
        engines["deepseek"].dead = True
        await wait_until(lambda: len(starter.started) == 1)
        await supervisor_of(client).wait_restarted()
        r = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-deepseek"})
        metrics = (await client.get("/metrics")).text
    assert starter.calls == ["deepseek"] * 3
    assert r.status_code == 200
    assert 'forecast_engine_restarts_total{base="deepseek",result="failed"} 2.0' in metrics
    assert 'forecast_engine_restarts_total{base="deepseek",result="ok"} 1.0' in metrics


async def test_backoff_doubles_up_to_its_cap(serve: Any) -> None:
    async with serve(restart=Starter(), restart_backoff_s=1, restart_backoff_max_s=10) as client:
        supervisor = supervisor_of(client)
        assert [supervisor.backoff(i) for i in range(6)] == [1, 2, 4, 8, 10, 10]


async def test_an_adapter_gone_from_disk_is_dropped_not_served_dead(
    serve: Any, engines: Any, adapter_root: Path, admin: dict[str, str]
) -> None:
    starter = Starter()
    async with serve(restart=starter, engine_check_s=0.01) as client:
        shutil.rmtree(adapter_root / "fingpt-deepseek")
        engines["deepseek"].dead = True
        await wait_until(lambda: len(starter.started) == 1)
        await supervisor_of(client).wait_restarted()
        r = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-deepseek"})
        aliases = (await client.get("/v1/adapters", headers=admin)).json()["aliases"]
        ready = await client.get("/readyz")
    assert r.status_code == 404 and error_of(r)["code"] == "adapter_not_loaded"
    assert aliases == {"fingpt-llama": "fingpt-llama@v1"}
    assert ready.status_code == 200


async def test_a_retiring_version_is_not_reloaded(
    serve: Any, engines: Any, admin: dict[str, str]
) -> None:
    starter = Starter()
    llama = engines["llama"]
    async with serve(restart=starter, engine_check_s=0.01) as client:
        llama.gate = asyncio.Event()  # v1 keeps one request in flight while v2 takes over
        held = asyncio.create_task(client.post("/v1/forecast", json=KO_LLAMA))
        await wait_until(lambda: llama.running == 1)
        swap = await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2"}, headers=admin)
        llama.dead = True
        llama.gate.set()
        await wait_until(lambda: len(starter.started) == 1)
        await supervisor_of(client).wait_restarted()
        lost = await held
        after = await client.post("/v1/forecast", json=KO_LLAMA)
        listing = (await client.get("/v1/adapters", headers=admin)).json()
    assert swap.status_code == 201
    assert lost.status_code in (200, 503)  # finished before the death, or 503: never a hang
    assert after.status_code == 200 and after.json()["adapter"] == "fingpt-llama@v2"
    assert sorted(a["version"] for a in listing["adapters"] if a["name"] == "fingpt-llama") == ["v2"]
    assert [lora.name for lora in starter.started[0].loras.values()] == ["fingpt-llama@v2"]


async def test_shutdown_closes_the_engines_the_supervisor_started(serve: Any, engines: Any) -> None:
    starter = Starter()
    async with serve(restart=starter, engine_check_s=0.01) as client:
        engines["llama"].dead = True
        await wait_until(lambda: len(starter.started) == 1)
        await supervisor_of(client).wait_restarted()
        assert not starter.started[0].dead
    assert starter.started[0].dead  # FakeEngine.aclose marks it closed
    assert not engines["deepseek"].dead  # the caller's engines are the caller's to close


async def test_without_a_restart_hook_a_dead_engine_stays_red(serve: Any, engines: Any) -> None:
    async with serve(engine_check_s=0.01) as client:
        engines["llama"].dead = True
        await asyncio.sleep(0.05)
        ready = await client.get("/readyz")
        r = await client.post("/v1/forecast", json=KO_LLAMA)
    assert client.app.state.service.supervisor is None  # type: ignore[attr-defined]
    assert ready.status_code == 503 and r.status_code == 503
    assert error_of(r)["code"] == "engine_unavailable"


async def test_the_service_restarts_engines_from_a_worker_thread(
    make_settings: Any, monkeypatch: Any
) -> None:
    import threading

    from service import main
    from service.settings import EngineSettings

    calls: list[tuple[str, bool]] = []

    def start(spec: EngineSettings) -> FakeEngine:
        calls.append((spec.base, threading.current_thread() is threading.main_thread()))
        return FakeEngine(spec.base)

    monkeypatch.setattr(main.VLLMEngine, "start", start)
    settings = make_settings(engines=[{"base": "llama"}, {"base": "deepseek", "max_loras": 2}])
    engine = await main.engine_starter(settings)("deepseek")
    assert engine.info.base == "deepseek"
    assert calls == [("deepseek", False)]  # the serving loop keeps answering meanwhile
