"""Folding in the adapter registry (FakeEngine): the promoted version goes to the engine with no
LoRA, the others through difference LoRAs; a promote flips the alias at once (the new version
served through its difference LoRA) and the base's fold task drains the base before the weights
change, losing no request; a failed fold keeps the old weights with every version served
exactly; ``/metrics`` names the folded version and times the fold's phases."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch

from service.fold import LoraFactors, read_lora, write_lora
from service.testing import error_of, write_stub_adapter

MODULES = [f"model.layers.0.self_attn.{m}_proj" for m in ("q", "k", "v", "o")]


def weigh(path: Path, seed: int) -> Path:
    """Give a stub adapter small real LoRA factors (rank and alpha of its manifest)."""
    g = torch.Generator().manual_seed(seed)
    write_lora(LoraFactors({m: (torch.randn(8, 6, generator=g), torch.randn(6, 8, generator=g)) for m in MODULES},
                           2.0, 8), path)
    return path


@pytest.fixture
def adapter_root(tmp_path: Path) -> Path:
    root = tmp_path / "adapters"
    for version, seed in (("v1", 1), ("v2", 2), ("v3", 3)):
        weigh(write_stub_adapter(root, "fingpt-llama", version, "llama"), seed)
    weigh(write_stub_adapter(root, "fingpt-deepseek", "v1", "deepseek"), 4)
    return root


async def wait_until(predicate: Any, *, tries: int = 500) -> None:
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def fold_on(tmp_path: Path) -> dict[str, Any]:
    return {"fold_promoted": True, "fold_dir": tmp_path / "folded"}


async def test_promoted_version_runs_without_lora_and_others_through_their_difference(
    serve: Any, admin: dict[str, str], engines: Any, adapter_root: Path, tmp_path: Path
) -> None:
    llama = engines["llama"]
    async with serve(**fold_on(tmp_path)) as client:
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        v1 = registry.resolve("fingpt-llama")
        assert llama.folded == v1.lora.path and v1.engine_lora is None
        loaded = await client.post(
            "/v1/adapters", json={"name": "fingpt-llama", "version": "v2", "promote": False}, headers=admin
        )
        assert loaded.status_code == 201, loaded.text
        v2 = registry.resolve("fingpt-llama@v2")
        difference = v2.engine_lora
        assert difference is not None and difference.lora_id in llama.loras
        assert difference.path.is_relative_to(tmp_path / "folded")
        d = read_lora(difference.path)
        for module in MODULES:  # folded v1 + difference = v2
            want = read_lora(v2.lora.path).delta(module) - read_lora(v1.lora.path).delta(module)
            torch.testing.assert_close(d.delta(module), want)
        await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama"})
        await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama@v2"})
        for model in ("fingpt-llama", "fingpt-llama@v2"):  # the OpenAI routes the same way
            r = await client.post("/v1/completions", json={"model": model, "prompt": "KO", "max_tokens": 4})
            assert r.status_code == 200, r.text
        metrics = (await client.get("/metrics")).text
        listing = (await client.get("/v1/adapters", headers=admin)).json()["adapters"]
    assert llama.used[-4:] == [None, difference.name, None, difference.name]
    assert {(a["name"], a["version"]): a["served_as"] for a in listing} == {
        ("fingpt-llama", "v1"): "folded", ("fingpt-llama", "v2"): "difference", ("fingpt-deepseek", "v1"): "folded"}
    assert 'forecast_adapter_folded{adapter="fingpt-llama",base="llama",version="v1"} 1.0' in metrics
    assert 'forecast_adapter_folded{adapter="fingpt-deepseek",base="deepseek",version="v1"} 1.0' in metrics


async def test_promote_flips_at_once_and_the_fold_drains_the_base_losing_no_request(
    serve: Any, admin: dict[str, str], engines: Any, tmp_path: Path
) -> None:
    llama = engines["llama"]
    async with serve(**fold_on(tmp_path)) as client:
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        v1 = registry.resolve("fingpt-llama")
        body = {"ticker": "KO", "adapter": "fingpt-llama"}
        llama.gate = asyncio.Event()
        held = [asyncio.create_task(client.post("/v1/forecast", json=body)) for _ in range(4)]
        await wait_until(lambda: llama.running == 4)
        swapped = await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2"}, headers=admin)
        # The promote returned with v1's requests still running: the alias serves v2 through
        # its difference against the v1 still folded; the fold task waits for the base to drain.
        assert swapped.status_code == 201, swapped.text
        assert llama.running == 4 and registry.folded("llama") is v1
        v2 = registry.resolve("fingpt-llama")
        assert v2.version == "v2" and v2.engine_lora is not None and v2.engine_lora != v2.lora
        await wait_until(lambda: not registry.fold_of("llama").open.is_set())
        late = [asyncio.create_task(client.post("/v1/forecast", json=body)) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert llama.running == 4  # the late ones wait at the gate
        llama.gate.set()
        results = await asyncio.gather(*held, *late)
        await registry.settled()
        await registry.wait_unloaded()
        listing = (await client.get("/v1/adapters", headers=admin)).json()
        metrics = (await client.get("/metrics")).text
    assert [r.status_code for r in results] == [200] * 7
    assert [r.json()["adapter"] for r in results] == ["fingpt-llama@v1"] * 4 + ["fingpt-llama@v2"] * 3
    assert llama.running_at_fold[-1] == 0  # nothing ran while the weights changed
    assert llama.folded == v2.lora.path and v2.engine_lora is None
    assert llama.used[-3:] == [None] * 3  # the late ones ran on the folded weights
    assert {a["version"] for a in listing["adapters"] if a["name"] == "fingpt-llama"} == {"v2"}
    assert set(llama.loras) == {v2.lora.lora_id}  # v1 and both differences gone
    for phase in ("prepare", "differences", "drain", "fold"):
        assert f'forecast_adapter_fold_phase_seconds_count{{base="llama",phase="{phase}"}}' in metrics


async def test_a_request_right_after_the_promote_runs_through_the_difference(
    serve: Any, admin: dict[str, str], engines: Any, tmp_path: Path
) -> None:
    llama = engines["llama"]
    async with serve(**fold_on(tmp_path)) as client:
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        prepared = asyncio.Event()
        prepare = llama.prepare_fold

        async def slow_prepare(path: Path) -> None:  # the fold task waits here
            await prepared.wait()
            await prepare(path)

        llama.prepare_fold = slow_prepare
        swapped = await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2"}, headers=admin)
        v2 = registry.resolve("fingpt-llama")
        difference = v2.engine_lora
        answer = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama"})
        prepared.set()
        await registry.settled()
    assert swapped.status_code == 201 and answer.status_code == 200
    assert answer.json()["adapter"] == "fingpt-llama@v2"
    assert difference is not None and llama.used[-1] == difference.name
    assert registry.folded("llama") is v2


async def test_failed_fold_keeps_the_old_weights_and_serves_the_promoted_version_exactly(
    serve: Any, admin: dict[str, str], engines: Any, tmp_path: Path
) -> None:
    llama = engines["llama"]
    async with serve(**fold_on(tmp_path)) as client:
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        v1 = registry.resolve("fingpt-llama")
        llama.fail_fold = True
        swapped = await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2"}, headers=admin)
        await registry.settled()
        await registry.wait_unloaded()
        after = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama"})
        metrics = (await client.get("/metrics")).text
    assert swapped.status_code == 201, swapped.text
    assert after.status_code == 200 and after.json()["adapter"] == "fingpt-llama@v2"
    v2 = registry.resolve("fingpt-llama")
    assert llama.folded == v1.lora.path and registry.folded("llama") is v1  # still in the weights
    assert v2.engine_lora is not None and v2.engine_lora != v2.lora  # v2 through its difference vs v1
    assert llama.used[-1] == v2.engine_lora.name
    assert set(llama.loras) == {v1.lora.lora_id, v2.lora.lora_id, v2.engine_lora.lora_id}
    assert 'forecast_adapter_fold_failures_total{base="llama"} 1.0' in metrics
    assert 'forecast_adapter_swaps_total{adapter="fingpt-llama",result="ok"}' in metrics
    assert 'forecast_adapter_folded{adapter="fingpt-llama",base="llama",version="v1"} 1.0' in metrics
    assert not list((tmp_path / "folded").glob("llama/*fingpt-llama@v1-minus-fingpt-llama@v2*"))
    llama.fail_fold = False  # the next promote tries again
    await registry.promote("fingpt-llama", "fingpt-llama@v2")
    await registry.settled()
    assert registry.folded("llama") is v2 and llama.folded == v2.lora.path


async def test_demote_and_repromote_return_the_weights(serve: Any, admin: dict[str, str], engines: Any,
                                                       tmp_path: Path) -> None:
    llama = engines["llama"]
    async with serve(**fold_on(tmp_path)) as client:
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2", "alias": "canary"},
                          headers=admin)
        assert registry.folded("llama").version == "v1"  # only the adapter's own alias moves the fold
        await registry.unfold("llama")
        assert await llama.weights_checksum() == "pristine"
        assert all(a.engine_lora == a.lora for a in registry.loaded() if a.base == "llama")
        promoted = await client.post("/v1/adapters/promote", json={"alias": "fingpt-llama", "adapter": "fingpt-llama@v2"},
                                     headers=admin)
        assert promoted.status_code == 200, promoted.text
        await registry.settled()
        await registry.wait_unloaded()
        metrics = (await client.get("/metrics")).text
    assert registry.folded("llama").version == "v2" and llama.folded == registry.resolve("canary").lora.path
    assert 'forecast_adapter_folded{adapter="fingpt-llama",base="llama",version="v2"} 1.0' in metrics
    assert 'forecast_adapter_folded{adapter="fingpt-llama",base="llama",version="v1"}' not in metrics


async def test_difference_too_large_for_the_engine_is_refused(
    serve: Any, admin: dict[str, str], engines: Any, tmp_path: Path
) -> None:
    from service.testing import FakeEngine

    engines["llama"] = FakeEngine("llama", max_lora_rank=8)
    async with serve(**fold_on(tmp_path)) as client:
        refused = await client.post(
            "/v1/adapters", json={"name": "fingpt-llama", "version": "v2", "promote": False}, headers=admin
        )
    assert refused.status_code == 422 and error_of(refused)["code"] == "rank_too_large"


async def test_folding_off_serves_every_version_through_its_lora(
    serve: Any, admin: dict[str, str], engines: Any
) -> None:
    async with serve() as client:
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama"})
        metrics = (await client.get("/metrics")).text
    assert engines["llama"].folded is None and engines["llama"].used == ["fingpt-llama@v1"]
    assert registry.folded("llama") is None
    assert "forecast_adapter_folded{" not in metrics


async def test_a_replaced_engine_gets_the_fold_again(serve: Any, engines: Any, tmp_path: Path) -> None:
    from service.testing import FakeEngine

    async with serve(**fold_on(tmp_path)) as client:
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        await registry.load("fingpt-llama", "v2", promote=False)
        fresh = FakeEngine("llama")
        engines["llama"] = fresh  # the registry reads engines by base
        reloaded = await registry.reattach("llama", fresh)
        v1, v2 = registry.resolve("fingpt-llama"), registry.resolve("fingpt-llama@v2")
    assert sorted(reloaded) == ["fingpt-llama@v1", "fingpt-llama@v2"]
    assert fresh.folded == v1.lora.path and v1.engine_lora is None
    assert v2.engine_lora is not None and v2.engine_lora.lora_id in fresh.loras


def test_folding_is_on_by_default_where_the_engines_run_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from service import engine_args as engine
    from service.app import folding
    from service.settings import ServiceSettings

    def settings(**kw: Any) -> ServiceSettings:
        return ServiceSettings(_env_file=None, **kw)  # type: ignore[call-arg]

    monkeypatch.setattr(engine, "on_gpu", lambda: True)
    assert folding(settings()) and not folding(settings(fold_promoted=False))
    monkeypatch.setattr(engine, "on_gpu", lambda: False)
    assert not folding(settings()) and folding(settings(fold_promoted=True))
