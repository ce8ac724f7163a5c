"""The adapters the service serves before anyone trained one here.

The product ships a **release adapter** per base for the tiny model the CPU default serves
(``service/release_adapters/fingpt-<base>/<version>/``: peft files + ``adapter.json``, trained
on every real row by ``training/configs/release_tiny.json``). ``seed_release_adapters``
copies each into the adapter root as that version, where it is missing.
``ensure_demo_adapters`` does that, and for a base with no version at all (another model, no
release for it) writes an untrained rank-8 stand-in (peft, random init, so it visibly changes
the base model's output) as ``v0``. A version already on disk always wins.

``python -m service.demo_adapters [--root var/adapters]`` seeds the release adapters, so a
training run that follows writes the next version (``make demo`` then hot-swaps to it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
from pathlib import Path
from typing import Any

from forecast.basemodels import BASES, TINY_MODEL_ID, adapter_name
from forecast.manifest import MANIFEST, AdapterManifest, LoraShape, load_manifest, write_manifest
from service.manifest import versions_on_disk

RELEASE_ROOT = Path(__file__).resolve().parent / "release_adapters"

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


def release_version(name: str, base_model: str, shipped: Path = RELEASE_ROOT) -> str | None:
    """The newest version of ``name`` the product ships for ``base_model``; None if none."""
    for version in reversed(versions_on_disk(shipped, name) if shipped.is_dir() else []):
        if load_manifest(shipped / name / version).base_model == base_model:
            return version
    return None


def seed_release_adapters(
    root: Path, bases: list[str], base_model: str, shipped: Path = RELEASE_ROOT
) -> dict[str, str]:
    """Copy each base's shipped release adapter into ``root`` (as its own version) where that
    version is missing; the name -> version of each release now under ``root``. A different
    adapter already under that version is left alone (and not reported as the release)."""
    seeded: dict[str, str] = {}
    for base in bases:
        name = adapter_name(base)
        version = release_version(name, base_model, shipped)
        if version is None:
            continue
        source, dest = shipped / name / version, root / name / version
        if not (dest / MANIFEST).is_file():
            staging = dest.with_name(f".{version}.seeding")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(source, staging, ignore=shutil.ignore_patterns(MANIFEST))
            shutil.copy2(source / MANIFEST, staging / MANIFEST)
            staging.rename(dest)
        if (dest / MANIFEST).read_bytes() == (source / MANIFEST).read_bytes():
            seeded[name] = version
    return seeded


def ensure_demo_adapters(
    model_dir: Path, root: Path, bases: list[str], base_model: str, shipped: Path = RELEASE_ROOT
) -> list[str]:
    """Adapter names (``adapter_name``, as training names them) for ``bases``: the shipped
    release adapters seeded, and an untrained stand-in written only where no version exists."""
    seed_release_adapters(root, bases, base_model, shipped)
    names = []
    for i, base in enumerate(bases):
        name = adapter_name(base)
        if not (root / name).is_dir() or not versions_on_disk(root, name):
            write_peft_adapter(model_dir, root, name, "v0", base, base_model=base_model, seed=i)
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m service.demo_adapters", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=Path("var/adapters"))
    args = p.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    seeded = seed_release_adapters(args.root, list(BASES), TINY_MODEL_ID)
    for name, version in seeded.items():
        print(f"  release adapter: {args.root / name / version} (shipped in {RELEASE_ROOT / name / version})")
    if not seeded:
        print(f"  no release adapter for {TINY_MODEL_ID} under {RELEASE_ROOT}")


if __name__ == "__main__":
    main()
