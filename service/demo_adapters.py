"""Untrained stand-in adapters, so the service has something to serve before training ran.

``ensure_demo_adapters`` writes one rank-8 LoRA per base on the tiny model (peft, random
init so it visibly changes the base model's output) under ``<root>/fingpt-<base>/v0`` with
its ``adapter.json``, unless a version of that adapter already exists (a trained one wins).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from forecast.basemodels import BASES, adapter_name
from forecast.manifest import MANIFEST, AdapterManifest, LoraShape, write_manifest
from service.manifest import versions_on_disk

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def manifest_for(
    name: str, version: str, base: str, *, base_model: str, r: int = 8, **extra: Any
) -> AdapterManifest:
    """The manifest of an untrained stand-in; ``extra`` sets or adds fields."""
    fields: dict[str, Any] = {
        "name": name,
        "version": version,
        "base_model": base_model,
        "served_base": base,
        "chat_format": BASES[base].chat_format,
        "lora": LoraShape(r=r, alpha=2 * r, dropout=0.0, target_modules=TARGETS),
        "created_at": dt.datetime.now(dt.UTC),
    }
    return AdapterManifest.model_validate(fields | extra)


def write_peft_adapter(
    model_dir: Path, root: Path, name: str, version: str, base: str, *, base_model: str, seed: int = 0
) -> Path:
    """A real rank-8 LoRA on ``model_dir``; written once (a no-op when present)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    path = root / name / version
    if (path / MANIFEST).is_file():
        return path
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(path))
    manifest = manifest_for(name, version, base, base_model=base_model, note="untrained stand-in")
    write_manifest(path, manifest)  # last: marks the dir complete
    return path


def ensure_demo_adapters(
    model_dir: Path, root: Path, bases: list[str], base_model: str
) -> list[str]:
    """Adapter names (``adapter_name``, as training names them) for ``bases``, writing an
    untrained stand-in only where no version exists."""
    names = []
    for i, base in enumerate(bases):
        name = adapter_name(base)
        if not (root / name).is_dir() or not versions_on_disk(root, name):
            write_peft_adapter(model_dir, root, name, "v0", base, base_model=base_model, seed=i)
        names.append(name)
    return names
