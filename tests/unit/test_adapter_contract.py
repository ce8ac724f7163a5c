"""The adapter contract between training and serving: what training writes, the service loads.

Training ships ``<root>/<name>/<version>/`` through ``training.manifest.write_adapter``; the
service validates the same directory with ``service.manifest.read_manifest``. Both go through
``forecast.manifest.AdapterManifest``, so every field training writes is read back unchanged.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from forecast.basemodels import BASES, adapter_name
from forecast.manifest import AdapterManifest, load_manifest, write_manifest
from service.demo_adapters import manifest_for
from service.manifest import read_manifest
from training.config import CONFIG_DIR, load_run
from training.manifest import build_manifest, write_adapter

WINDOW = {"train_start": "2023-01-15", "train_end": "2023-09-24", "eval_start": "2023-10-22",
          "eval_end": "2023-12-31", "weeks": 4}
SCORED = {"step": 2, "checkpoint": "checkpoint-2", "train_loss": 2.2, "eval_loss": 2.6, "mse": 9.5,
          "binary_accuracy": 0.5, "rouge": {"positive": {"rouge1": 0.1}}}


def checkpoint(tmp_path: Path, r: int, alpha: int, targets: list[str]) -> Path:
    """A checkpoint as the trainer saves it: peft's config and a safetensors file."""
    ckpt = tmp_path / "run" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": targets,
              "base_model_name_or_path": "/local/trainer/path"}
    (ckpt / "adapter_config.json").write_text(json.dumps(config))
    header = b'{"__metadata__":{"format":"pt"}}'
    (ckpt / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    return ckpt


@pytest.mark.parametrize("base", sorted(BASES))
def test_what_training_writes_the_service_loads(tmp_path: Path, base: str) -> None:
    run = load_run(CONFIG_DIR / "cpu_tiny.json", base=base)
    root = tmp_path / "adapters"
    ckpt = checkpoint(tmp_path, run.lora.r, run.lora.alpha, list(run.lora.target_modules))
    dest = write_adapter(ckpt, run, WINDOW, SCORED, root, version="v1")

    served = read_manifest(root, dest, adapter_name(base), "v1")
    written = build_manifest(run, "v1", WINDOW, SCORED)
    assert served.model_dump(exclude={"code_revision", "created_at"}) == written.model_dump(
        exclude={"code_revision", "created_at"}
    )
    assert served.served_base == base and served.chat_format == BASES[base].chat_format
    assert served.stands_in_for == BASES[base].model_id  # the tiny model trained in its place
    assert served.created_at is not None and served.created_at.utcoffset() is not None


@pytest.mark.parametrize("base", sorted(BASES))
def test_one_adapter_naming_convention(base: str) -> None:
    """Training's default name, the demo's stand-ins and ``BASES`` agree: ``fingpt-<base>``."""
    assert load_run(CONFIG_DIR / "cpu_tiny.json", base=base).adapter_name == adapter_name(base)
    assert BASES[base].adapter_name == adapter_name(base) == f"fingpt-{base}"


def test_the_demo_stand_in_manifest_round_trips(tmp_path: Path) -> None:
    manifest = manifest_for("fingpt-llama", "v0", "llama", base_model="tiny/id", note="stand-in")
    write_manifest(tmp_path, manifest)
    again = load_manifest(tmp_path)
    assert again == manifest and again.model_extra == {"note": "stand-in"}
    assert "stands_in_for" not in json.loads((tmp_path / "adapter.json").read_text())
    assert isinstance(again, AdapterManifest)
