"""The shipped release adapters: seeded into the adapter root as their own version (only for
the model they were trained on, never over another adapter), and the demo starts on the
release and hot-swaps to a newer version trained here."""

from __future__ import annotations

from pathlib import Path

from forecast.basemodels import TINY_MODEL_ID
from service.demo import release_first
from service.demo_adapters import RELEASE_ROOT, release_version, seed_release_adapters
from service.manifest import MANIFEST, versions_on_disk
from service.settings import EngineSettings, ServiceSettings
from service.testing import write_stub_adapter

OTHER = "meta-llama/Llama-3.1-8B-Instruct"


def shipped(tmp_path: Path) -> Path:
    root = tmp_path / "shipped"
    write_stub_adapter(root, "fingpt-llama", "v1", "llama", base_model=TINY_MODEL_ID)
    write_stub_adapter(root, "fingpt-deepseek", "v1", "deepseek", base_model=OTHER)
    return root


def test_the_release_adapter_is_seeded_for_its_own_model_only(tmp_path: Path) -> None:
    source, root = shipped(tmp_path), tmp_path / "adapters"
    seeded = seed_release_adapters(root, ["llama", "deepseek"], TINY_MODEL_ID, source)
    assert seeded == {"fingpt-llama": "v1"}
    assert (root / "fingpt-llama" / "v1" / MANIFEST).read_bytes() == (
        source / "fingpt-llama" / "v1" / MANIFEST
    ).read_bytes()
    assert versions_on_disk(root, "fingpt-deepseek") == []  # trained on another model
    assert not list((root / "fingpt-llama").glob(".*"))  # no staging dir left behind
    assert seed_release_adapters(root, ["llama"], TINY_MODEL_ID, source) == seeded  # idempotent


def test_an_adapter_already_under_that_version_is_left_alone(tmp_path: Path) -> None:
    source, root = shipped(tmp_path), tmp_path / "adapters"
    mine = write_stub_adapter(root, "fingpt-llama", "v1", "llama", base_model=TINY_MODEL_ID, note="mine")
    before = (mine / MANIFEST).read_bytes()
    assert seed_release_adapters(root, ["llama"], TINY_MODEL_ID, source) == {}
    assert (mine / MANIFEST).read_bytes() == before


def test_the_demo_starts_on_the_release_and_swaps_to_the_newest(tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    settings = ServiceSettings(
        _env_file=None,  # type: ignore[call-arg]
        adapter_root=root, preload=["fingpt-llama", "fingpt-deepseek"],
        engines=[EngineSettings(base="llama", model_id=TINY_MODEL_ID),
                 EngineSettings(base="deepseek", model_id=TINY_MODEL_ID)],
    )
    release = release_version("fingpt-llama", TINY_MODEL_ID)
    if release is None:  # the shipped release must exist for the tiny model
        raise AssertionError(f"no release adapter for {TINY_MODEL_ID} under {RELEASE_ROOT}")
    seed_release_adapters(root, ["llama", "deepseek"], TINY_MODEL_ID)
    write_stub_adapter(root, "fingpt-llama", "v9", "llama", base_model=TINY_MODEL_ID)
    preload, swaps = release_first(settings)
    assert preload == [f"fingpt-llama@{release}", "fingpt-deepseek"]
    assert swaps == {"fingpt-llama": (release, "v9")}
