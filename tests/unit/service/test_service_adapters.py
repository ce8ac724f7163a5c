"""Adapter registry: hot-swap under in-flight requests, failed loads, manifests, confinement."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from service.errors import AdapterError, Forbidden
from service.manifest import MANIFEST, WEIGHTS, version_key
from service.testing import error_of, write_stub_adapter


async def wait_until(predicate: Any, *, tries: int = 500) -> None:
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_hot_swap_lets_in_flight_requests_finish_on_the_old_version(
    serve: Any, admin: dict[str, str], engines: Any, adapter_root: Path
) -> None:
    write_stub_adapter(adapter_root, "fingpt-llama", "v2", "llama")
    llama = engines["llama"]
    async with serve() as client:
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        old_id = registry.resolve("fingpt-llama").lora.lora_id
        llama.gate = asyncio.Event()
        body = {"ticker": "KO", "adapter": "fingpt-llama"}
        held = [asyncio.create_task(client.post("/v1/forecast", json=body)) for _ in range(5)]
        await wait_until(lambda: llama.running == 5)

        swap = await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2"}, headers=admin)
        assert swap.status_code == 201, swap.text
        assert swap.json()["aliases"] == ["fingpt-llama"]
        listing = (await client.get("/v1/adapters", headers=admin)).json()
        assert listing["aliases"]["fingpt-llama"] == "fingpt-llama@v2"
        old = next(a for a in listing["adapters"] if a["version"] == "v1" and a["base"] == "llama")
        assert old["retiring"] and old["inflight"] == 5 and old_id in llama.loras

        llama.gate.set()
        results = await asyncio.gather(*held)
        after = await client.post("/v1/forecast", json=body)
        await registry.wait_unloaded()
        listing = (await client.get("/v1/adapters", headers=admin)).json()
        metrics = (await client.get("/metrics")).text

    assert [r.status_code for r in results] == [200] * 5
    assert {r.json()["adapter"] for r in results} == {"fingpt-llama@v1"}
    assert after.json()["adapter"] == "fingpt-llama@v2"
    assert llama.removed == [old_id] and old_id not in llama.loras
    assert {a["version"] for a in listing["adapters"] if a["name"] == "fingpt-llama"} == {"v2"}
    assert 'forecast_adapter_swaps_total{adapter="fingpt-llama",result="ok"} 2.0' in metrics
    assert 'forecast_adapter_alias{adapter="fingpt-llama",alias="fingpt-llama",version="v2"} 1.0' in metrics
    assert 'forecast_adapter_alias{adapter="fingpt-llama",alias="fingpt-llama",version="v1"}' not in metrics
    assert 'forecast_adapter_loaded{adapter="fingpt-llama",base="llama",version="v1"}' not in metrics
    assert 'forecast_inflight_requests{adapter="fingpt-llama",version="v1"}' not in metrics


async def test_failed_load_keeps_the_old_version_serving(
    serve: Any, admin: dict[str, str], engines: Any, adapter_root: Path
) -> None:
    write_stub_adapter(adapter_root, "fingpt-llama", "v2", "llama")
    write_stub_adapter(adapter_root, "fingpt-llama", "v3", "llama")
    engines["llama"].fail_loads.add("fingpt-llama@v2")
    async with serve() as client:
        before = set(engines["llama"].loras)
        failed = await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2"}, headers=admin)
        still = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama"})
        assert set(engines["llama"].loras) == before
        ok = await client.post("/v1/adapters", json={"name": "fingpt-llama"}, headers=admin)
        metrics = (await client.get("/metrics")).text
    assert failed.status_code == 422 and error_of(failed)["code"] == "engine_load_failed"
    assert still.json()["adapter"] == "fingpt-llama@v1"
    assert ok.status_code == 201 and ok.json()["version"] == "v3"  # newest on disk
    assert ok.json()["lora_id"] == 4  # ids 1, 2 preloaded, 3 burnt by the failure: never reused
    assert 'forecast_adapter_swaps_total{adapter="fingpt-llama",result="failed"} 1.0' in metrics


def break_manifest(root: Path, field: str, value: Any) -> None:
    path = root / "fingpt-llama" / "v2" / MANIFEST
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        (lambda root: break_manifest(root, "base_model", "meta-llama/Llama-3.1-8B-Instruct"), "base_mismatch"),
        (lambda root: break_manifest(root, "served_base", "deepseek"), "chat_format_mismatch"),
        (lambda root: break_manifest(root, "chat_format", "llama2"), "chat_format_mismatch"),
        (lambda root: break_manifest(root, "served_base", "mistral"), "invalid_manifest"),
        (lambda root: break_manifest(root, "lora", {"r": 64, "alpha": 128, "target_modules": ["q_proj"]}),
         "manifest_mismatch"),
        (lambda root: break_manifest(root, "version", "v9"), "manifest_mismatch"),
        (lambda root: (root / "fingpt-llama" / "v2" / WEIGHTS).write_bytes(b"garbage"), "corrupt_adapter"),
        (lambda root: (root / "fingpt-llama" / "v2" / WEIGHTS).unlink(), "corrupt_adapter"),
        (lambda root: (root / "fingpt-llama" / "v2" / MANIFEST).write_text("{"), "invalid_manifest"),
    ],
)
async def test_bad_adapters_are_refused_and_nothing_changes(
    serve: Any, admin: dict[str, str], engines: Any, adapter_root: Path, damage: Any, code: str
) -> None:
    write_stub_adapter(adapter_root, "fingpt-llama", "v2", "llama")
    damage(adapter_root)
    async with serve() as client:
        loaded = set(engines["llama"].loras)
        r = await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2"}, headers=admin)
        aliases = (await client.get("/v1/adapters", headers=admin)).json()["aliases"]
    assert r.status_code == 422, r.text
    assert error_of(r)["code"] == code
    assert set(engines["llama"].loras) == loaded
    assert aliases["fingpt-llama"] == "fingpt-llama@v1"


async def test_rank_above_the_engine_limit_is_refused(serve: Any, admin: dict[str, str], adapter_root: Path) -> None:
    write_stub_adapter(adapter_root, "fingpt-llama", "v2", "llama", r=32)
    async with serve() as client:
        r = await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2"}, headers=admin)
    assert error_of(r)["code"] == "rank_too_large"


@pytest.mark.parametrize("name", ["..", "../etc", "/etc/passwd", "a/b", ".hidden", "x" * 200])
async def test_names_that_are_not_plain_segments_are_refused(
    serve: Any, admin: dict[str, str], name: str
) -> None:
    async with serve() as client:
        api = await client.post("/v1/adapters", json={"name": name}, headers=admin)
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        with pytest.raises(Forbidden):
            await registry.load(name, "v1")
        with pytest.raises(Forbidden):
            await registry.load("fingpt-llama", name)
    assert api.status_code == 422


async def test_symlinks_out_of_the_root_are_refused(
    serve: Any, admin: dict[str, str], adapter_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    write_stub_adapter(outside, "evil", "v1", "llama")
    os.symlink(outside / "evil", adapter_root / "evil")
    write_stub_adapter(adapter_root, "fingpt-llama", "v2", "llama")
    weights = adapter_root / "fingpt-llama" / "v2" / WEIGHTS
    weights.unlink()
    os.symlink(outside / "evil" / "v1" / WEIGHTS, weights)
    async with serve() as client:
        dir_link = await client.post("/v1/adapters", json={"name": "evil"}, headers=admin)
        file_link = await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v2"}, headers=admin)
    assert dir_link.status_code == file_link.status_code == 403
    assert error_of(dir_link)["code"] == error_of(file_link)["code"] == "adapter_path_forbidden"


async def test_unknown_adapter_or_version_is_404(serve: Any, admin: dict[str, str]) -> None:
    async with serve() as client:
        name = await client.post("/v1/adapters", json={"name": "nobody"}, headers=admin)
        version = await client.post("/v1/adapters", json={"name": "fingpt-llama", "version": "v9"}, headers=admin)
    assert error_of(name)["code"] == error_of(version)["code"] == "adapter_not_found"


async def test_load_without_promote_then_promote_then_unload(
    serve: Any, admin: dict[str, str], engines: Any, adapter_root: Path
) -> None:
    write_stub_adapter(adapter_root, "fingpt-llama", "v2", "llama")
    async with serve() as client:
        r = await client.post("/v1/adapters", headers=admin,
                              json={"name": "fingpt-llama", "version": "v2", "promote": False})
        assert r.json()["aliases"] == []
        serving = (await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama"})).json()
        direct = (await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama@v2"})).json()
        in_use = await client.delete("/v1/adapters/fingpt-llama/versions/v1", headers=admin)
        canary = await client.post("/v1/adapters/promote", headers=admin,
                                   json={"alias": "llama-canary", "adapter": "fingpt-llama@v2"})
        promoted = await client.post("/v1/adapters/promote", headers=admin,
                                     json={"alias": "fingpt-llama", "adapter": "fingpt-llama@v2"})
        await client.app.state.service.registry.wait_unloaded()  # type: ignore[attr-defined]
        listing = (await client.get("/v1/adapters", headers=admin)).json()
        gone = await client.delete("/v1/adapters/fingpt-llama/versions/v1", headers=admin)
    assert serving["adapter"] == "fingpt-llama@v1" and direct["adapter"] == "fingpt-llama@v2"
    assert in_use.status_code == 409 and error_of(in_use)["code"] == "adapter_in_use"
    assert canary.json()["aliases"] == ["llama-canary"]
    assert sorted(promoted.json()["aliases"]) == ["fingpt-llama", "llama-canary"]
    assert [a["version"] for a in listing["adapters"] if a["name"] == "fingpt-llama"] == ["v2"]
    assert gone.status_code == 404


async def test_watcher_picks_up_new_versions_once(
    serve: Any, engines: Any, adapter_root: Path
) -> None:
    async with serve() as client:
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        assert await registry.scan_once() == []
        write_stub_adapter(adapter_root, "fingpt-llama", "v10", "llama")
        write_stub_adapter(adapter_root, "fingpt-llama", "v9", "llama")
        assert await registry.scan_once() == ["fingpt-llama@v10"]
        engines["llama"].fail_loads.add("fingpt-llama@v11")
        write_stub_adapter(adapter_root, "fingpt-llama", "v11", "llama")
        assert await registry.scan_once() == []
        assert await registry.scan_once() == []  # not retried
        assert registry.aliases["fingpt-llama"] == "fingpt-llama@v10"
    assert engines["llama"].used == []


async def test_registry_refuses_without_touching_the_engine(engines: Any, adapter_root: Path) -> None:
    from service.adapters import AdapterRegistry
    from service.telemetry import Telemetry

    write_stub_adapter(adapter_root, "odd", "v1", "llama", base_model="someone/else")
    registry = AdapterRegistry(adapter_root, engines, Telemetry())
    with pytest.raises(AdapterError):
        await registry.load("odd")
    assert engines["llama"].loras == {} and registry.loaded() == []


def test_versions_sort_naturally() -> None:
    versions = ["v10", "v2", "v1", "2024-01-10", "2024-01-02"]
    assert sorted(versions, key=version_key) == ["2024-01-02", "2024-01-10", "v1", "v2", "v10"]


# -- cases mutation testing showed unguarded (tests/MUTATION.md) ---------------------------


async def test_the_watcher_passes_over_aliases_it_does_not_follow(
    serve: Any, adapter_root: Path
) -> None:
    """Aliases in the order: one already on its newest version, one that is not the adapter's
    own name, then the one to swap: the scan goes past the first two to reach the third."""
    async with serve() as client:
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        await registry.promote("llama-stable", "fingpt-llama@v1")
        registry.remove_alias("fingpt-llama")  # then back, after the other alias
        await registry.promote("fingpt-llama", "fingpt-llama@v1")
        assert list(registry.aliases) == ["fingpt-deepseek", "llama-stable", "fingpt-llama"]
        write_stub_adapter(adapter_root, "fingpt-llama", "v2", "llama")
        assert await registry.scan_once() == ["fingpt-llama@v2"]
        assert registry.aliases["llama-stable"] == "fingpt-llama@v1"  # only its own alias follows


async def test_promote_by_name_takes_the_newest_version_on_disk(
    serve: Any, adapter_root: Path
) -> None:
    from service.errors import NotFound

    write_stub_adapter(adapter_root, "fingpt-llama", "v2", "llama")
    async with serve() as client:
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        await registry.load("fingpt-llama", "v2", promote=False)
        promoted = await registry.promote("llama-canary", "fingpt-llama")
        with pytest.raises(NotFound) as missing:
            registry.resolve("fingpt-llama@v7")
    assert promoted.ref == "fingpt-llama@v2"
    assert missing.value.code == "adapter_not_loaded"
