"""Issue 18, items 3, 5, 6 and 10: routing weights that are not finite or overflow, arm names
that collide with the forecaster's own labels, failed adapter loads that leave series and
locks behind, and manifests whose LoRA shape disagrees with peft's config."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.errors import InvalidRequest
from service.manifest import MANIFEST, PEFT_CONFIG
from service.routing import Arm, Router, RoutingTable
from service.settings import ServiceSettings
from service.telemetry import Telemetry
from service.testing import error_of, write_stub_adapter

LLAMA, DEEPSEEK = "fingpt-llama", "fingpt-deepseek"


def arms_json(*arms: tuple[str, str, str]) -> bytes:
    """A routing body written by hand, so that ``Infinity`` and ``NaN`` reach the server."""
    items = ",".join(f'{{"name": "{n}", "adapter": "{a}", "weight": {w}}}' for n, a, w in arms)
    return f'{{"arms": [{items}]}}'.encode()


def series(metrics: str) -> list[str]:
    return [line for line in metrics.splitlines() if line and not line.startswith("#")]


# -- 3. weights: finite, bounded, not all zero; the split never overflows --------------------

@pytest.mark.parametrize(
    "weights",
    [("Infinity", "1"), ("-Infinity", "1"), ("NaN", "1"), ("1e308", "1e308"), ("1e7", "1"), ("0", "0")],
)
async def test_weights_that_are_not_finite_or_overflow_are_422_and_change_nothing(
    serve: Any, admin: dict[str, str], weights: tuple[str, str]
) -> None:
    async with serve() as client:
        before = (await client.get("/v1/routing", headers=admin)).json()
        body = arms_json(("a", LLAMA, weights[0]), ("b", DEEPSEEK, weights[1]))
        r = await client.put(
            "/v1/routing", content=body, headers={**admin, "Content-Type": "application/json"}
        )
        after = (await client.get("/v1/routing", headers=admin)).json()
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 422, r.text
    error_of(r)
    assert after == before
    weight_lines = [s for s in series(metrics) if s.startswith("forecast_routing_weight")]
    assert len(weight_lines) == 2 and not any("nan" in s.lower() for s in weight_lines)


def test_the_router_refuses_non_finite_and_unbounded_weights() -> None:
    router = Router(Telemetry(), salt="t", rng=random.Random(0))
    for weights in ((math.inf, 1.0), (math.nan, 1.0), (1e308, 1e308), (-1.0, 2.0), (0.0, 0.0)):
        with pytest.raises(InvalidRequest) as caught:
            router.set([Arm("a", "a", weights[0]), Arm("b", "b", weights[1])])
        assert caught.value.code == "invalid_routing"
    assert router.table.version == 0


def test_the_split_of_huge_equal_weights_is_even() -> None:
    """Normalised without overflow: 1e308 + 1e308 is inf, yet the shares stay 0.5 / 0.5."""
    table = RoutingTable((Arm("a", "a", 1e308), Arm("b", "b", 1e308)))
    assert [share for _, share in table.normalised()] == [0.5, 0.5]
    router = Router(Telemetry(), salt="t", rng=random.Random(0))
    router.set([Arm("a", "a", 1e6), Arm("b", "b", 1e6)])
    counts = Counter(router.choose(f"k{i}").arm for i in range(4000))
    assert abs(counts["a"] - 2000) <= 4 * math.sqrt(4000 * 0.25), counts


@pytest.mark.parametrize(
    "routing",
    [{"a": math.inf, "b": 1.0}, {"a": math.nan}, {"a": 1e308, "b": 1e308}, {"a": 0.0, "b": 0.0}],
)
def test_settings_refuse_unroutable_weights_at_start_up(routing: dict[str, float]) -> None:
    with pytest.raises(ValidationError, match="routing"):
        ServiceSettings(_env_file=None, routing=routing)  # type: ignore[call-arg]


def test_settings_read_infinity_from_the_environment_and_refuse_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FORECAST_SERVICE_ROUTING", '{"a": Infinity, "b": 1}')
    with pytest.raises(ValidationError, match="finite"):
        ServiceSettings(_env_file=None)  # type: ignore[call-arg]


# -- 5. the labels "direct" and "shadow" are reserved -----------------------------------------

@pytest.mark.parametrize("name", ["shadow", "direct", "Shadow"])
async def test_arms_named_like_the_forecasters_labels_are_422(
    serve: Any, admin: dict[str, str], name: str
) -> None:
    async with serve() as client:
        before = (await client.get("/v1/routing", headers=admin)).json()
        r = await client.put("/v1/routing", headers=admin, json={"arms": [
            {"name": name, "adapter": LLAMA, "weight": 1},
            {"name": "b", "adapter": DEEPSEEK, "weight": 1}]})
        after = (await client.get("/v1/routing", headers=admin)).json()
    assert r.status_code == 422 and error_of(r)["code"] == "invalid_routing"
    assert "reserved" in error_of(r)["message"]
    assert after == before


@pytest.mark.parametrize(
    "fields", [{"routing": {"shadow": 1.0}}, {"routing": {"direct": 1.0}}, {"preload": ["shadow@v1"]}]
)
def test_settings_refuse_reserved_arm_names_at_start_up(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="reserved"):
        ServiceSettings(_env_file=None, **fields)  # type: ignore[call-arg]


# -- 6. failed loads leave no series and no lock ---------------------------------------------

async def test_failed_loads_of_new_names_leave_no_series_and_no_lock(
    serve: Any, admin: dict[str, str], adapter_root: Path
) -> None:
    for i in range(10):  # on disk but unloadable: a manifest that names another adapter
        write_stub_adapter(adapter_root, f"broken-{i}", "v1", "llama")
        edit_json(adapter_root / f"broken-{i}" / "v1" / MANIFEST, name="someone-else")
    async with serve() as client:
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        locks_before = dict(registry._locks)
        series_before = series((await client.get("/metrics")).text)
        statuses = Counter()
        for i in range(40):  # not on disk at all
            r = await client.post("/v1/adapters", headers=admin, json={"name": f"junk-{i}", "version": "v1"})
            statuses[r.status_code] += 1
        for i in range(10):
            r = await client.post("/v1/adapters", headers=admin, json={"name": f"broken-{i}"})
            statuses[r.status_code] += 1
        locks_after = dict(registry._locks)
        series_after = series((await client.get("/metrics")).text)
    assert statuses == {404: 40, 422: 10}
    assert locks_after == locks_before == {}
    assert len(series_after) == len(series_before)
    assert 'forecast_adapter_swaps_total{adapter="_new",result="failed"} 50.0' in series_after


async def test_a_failed_swap_of_a_served_name_is_still_counted_by_name(
    serve: Any, admin: dict[str, str], engines: Any, adapter_root: Path
) -> None:
    write_stub_adapter(adapter_root, LLAMA, "v2", "llama")
    engines["llama"].fail_loads.add(f"{LLAMA}@v2")
    async with serve() as client:
        registry = client.app.state.service.registry  # type: ignore[attr-defined]
        r = await client.post("/v1/adapters", headers=admin, json={"name": LLAMA, "version": "v2"})
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 422
    assert registry._locks == {}
    assert f'forecast_adapter_swaps_total{{adapter="{LLAMA}",result="failed"}} 1.0' in metrics


# -- 10. the manifest's LoRA shape: finite, and the same as peft's config ------------------

def edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        target = data
        *parents, last = key.split("__")
        for parent in parents:
            target = target[parent]
        target[last] = value
    path.write_text(json.dumps(data))  # float("inf") is written as Infinity, NaN as NaN


V2 = Path(LLAMA) / "v2"


@pytest.mark.parametrize(
    ("damage", "code", "says"),
    [
        # alpha Infinity in both files: equal, so only the finiteness check refuses it
        (lambda root: (edit_json(root / V2 / MANIFEST, lora__alpha=math.inf),
                       edit_json(root / V2 / PEFT_CONFIG, lora_alpha=math.inf)),
         "invalid_manifest", "lora.alpha"),
        (lambda root: edit_json(root / V2 / MANIFEST, lora__dropout=math.nan),
         "invalid_manifest", "lora.dropout"),
        (lambda root: edit_json(root / V2 / PEFT_CONFIG, lora_alpha=32), "manifest_mismatch", "lora_alpha"),
        (lambda root: edit_json(root / V2 / PEFT_CONFIG, lora_alpha=None), "manifest_mismatch", "lora_alpha"),
        (lambda root: edit_json(root / V2 / PEFT_CONFIG, target_modules=["q_proj", "v_proj"]),
         "manifest_mismatch", "target_modules"),
        (lambda root: edit_json(root / V2 / MANIFEST, lora__target_modules=["q_proj"]),
         "manifest_mismatch", "target_modules"),
    ],
)
async def test_a_lora_shape_that_is_not_finite_or_disagrees_with_peft_is_refused(
    serve: Any, admin: dict[str, str], engines: Any, adapter_root: Path, damage: Any, code: str, says: str
) -> None:
    write_stub_adapter(adapter_root, LLAMA, "v2", "llama")
    damage(adapter_root)
    async with serve() as client:
        loaded = set(engines["llama"].loras)
        r = await client.post("/v1/adapters", json={"name": LLAMA, "version": "v2"}, headers=admin)
        aliases = (await client.get("/v1/adapters", headers=admin)).json()["aliases"]
    assert r.status_code == 422, r.text
    assert error_of(r)["code"] == code and says in error_of(r)["message"]
    assert set(engines["llama"].loras) == loaded
    assert aliases[LLAMA] == f"{LLAMA}@v1"


async def test_target_modules_in_another_order_and_an_integer_alpha_match(
    serve: Any, admin: dict[str, str], adapter_root: Path
) -> None:
    """peft writes target_modules from a set (any order) and alpha as an int."""
    write_stub_adapter(adapter_root, LLAMA, "v2", "llama")
    edit_json(adapter_root / V2 / PEFT_CONFIG, lora_alpha=16, target_modules=["v_proj", "o_proj", "q_proj", "k_proj"])
    edit_json(adapter_root / V2 / MANIFEST, lora__alpha=16.0)
    async with serve() as client:
        r = await client.post("/v1/adapters", json={"name": LLAMA, "version": "v2"}, headers=admin)
    assert r.status_code == 201, r.text
