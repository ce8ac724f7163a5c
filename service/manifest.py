"""The adapter contract with training: a peft LoRA directory plus an ``adapter.json`` manifest.

Layout: ``<adapter_root>/<name>/<version>/`` holding ``adapter_config.json``,
``adapter_model.safetensors`` and ``adapter.json`` (its schema: :mod:`forecast.manifest`). This
module validates one such directory without importing training/ or torch: the manifest's
fields, its agreement with the directory
it sits in and with peft's own config, and that the weights file is a readable safetensors
file. Paths are confined to the adapter root: names are single safe path segments and the
resolved directory (and every file in it) must stay under the root, symlinks included.
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

from pydantic import ValidationError

from forecast.manifest import MANIFEST, SEGMENT, AdapterManifest, LoraShape, load_manifest
from service.errors import AdapterError, Forbidden, NotFound

if TYPE_CHECKING:
    from service.engine import EngineInfo

__all__ = ["MANIFEST", "PEFT_CONFIG", "SEGMENT", "WEIGHTS", "AdapterManifest", "LoraShape"]

log = logging.getLogger(__name__)

PEFT_CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"


def check_segment(kind: str, value: str) -> str:
    """A name or version usable as one directory name under the root, or 403."""
    if not SEGMENT.fullmatch(value) or ".." in value:
        raise Forbidden(
            f"adapter {kind} {value!r} is not a plain name (letters, digits, '.', '_', '-')",
            code="adapter_path_forbidden",
        )
    return value


def confined(root: Path, *parts: str) -> Path:
    """``root/parts...`` resolved, refusing anything that leaves ``root`` (403)."""
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if not path.is_relative_to(base):
        raise Forbidden("adapter path leaves the adapter root", code="adapter_path_forbidden")
    return path


def adapter_dir(root: Path, name: str, version: str) -> Path:
    path = confined(root, check_segment("name", name), check_segment("version", version))
    if not (path / MANIFEST).is_file():
        raise NotFound(f"adapter {name}@{version} not found", code="adapter_not_found")
    return path


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: ``v2 < v10``, ``2024-01-02 < 2024-01-10``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"(\d+)", version)
        if part
    )


def versions_on_disk(root: Path, name: str) -> list[str]:
    """Versions of ``name`` that have a manifest, oldest first; versions that link outside
    the root are left out (loading one by name is still 403)."""
    base = confined(root, check_segment("name", name))
    if not base.is_dir():
        return []
    found = [
        p.name for p in base.iterdir()
        if SEGMENT.fullmatch(p.name) and _inside(root, p) and (p / MANIFEST).is_file()
    ]
    return sorted(found, key=version_key)


def names_on_disk(root: Path) -> list[str]:
    """Adapter names under the root; names that link outside it are left out, so one bad
    symlink does not make every listing 403."""
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir()
        if p.is_dir() and SEGMENT.fullmatch(p.name) and _inside(root, p)
    )


_escapes_logged: set[Path] = set()  # log each escaping entry once, not on every listing


def _inside(root: Path, path: Path) -> bool:
    if path.resolve().is_relative_to(root.resolve()):
        return True
    if path not in _escapes_logged:
        _escapes_logged.add(path)
        log.warning("adapter listing skips %s: it links outside the adapter root", path)
    return False


def read_manifest(root: Path, path: Path, name: str, version: str) -> AdapterManifest:
    """Validate the directory at ``path`` and return its manifest (422 when it is not usable)."""
    for file in (MANIFEST, PEFT_CONFIG, WEIGHTS):
        target = path / file
        if not target.is_file():
            raise AdapterError(f"{name}@{version}: missing {file}", code="corrupt_adapter")
        if not target.resolve().is_relative_to(root.resolve()):
            raise Forbidden(f"{name}@{version}: {file} links outside the adapter root",
                            code="adapter_path_forbidden")
    try:
        manifest = load_manifest(path)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise AdapterError(
            f"{name}@{version}: invalid {MANIFEST}: {where}: {first.get('msg')}",
            code="invalid_manifest",
        ) from None
    if (manifest.name, manifest.version) != (name, version):
        raise AdapterError(
            f"{MANIFEST} names {manifest.name}@{manifest.version} but sits in {name}/{version}",
            code="manifest_mismatch",
        )
    check_peft_config(path / PEFT_CONFIG, manifest, f"{name}@{version}")
    check_safetensors(path / WEIGHTS, f"{name}@{version}")
    return manifest


def check_peft_config(path: Path, manifest: AdapterManifest, ref: str) -> None:
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise AdapterError(f"{ref}: {PEFT_CONFIG} is not JSON", code="corrupt_adapter") from None
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{ref}: {PEFT_CONFIG} is not a LoRA config", code="corrupt_adapter")
    lora = manifest.lora
    alpha, targets = config.get("lora_alpha"), config.get("target_modules")
    # peft writes target_modules as a list in set order, or one string (a name or a regex)
    found = sorted(map(str, targets)) if isinstance(targets, list) else [targets]
    for key, theirs, ours, same in (
        ("r", config.get("r"), lora.r, config.get("r") == lora.r),
        ("lora_alpha", alpha, lora.alpha, _number(alpha) and math.isclose(alpha, lora.alpha)),
        ("target_modules", targets, lora.target_modules, found == sorted(lora.target_modules)),
    ):
        if not same:
            raise AdapterError(
                f"{ref}: {PEFT_CONFIG} has {key}={theirs!r} but the manifest says {ours!r}",
                code="manifest_mismatch",
            )


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_safetensors(path: Path, ref: str) -> None:
    """The file starts with a little-endian u64 header length and a JSON header."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or 8 + n > size:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (struct.error, ValueError, UnicodeDecodeError):
        raise AdapterError(f"{ref}: {WEIGHTS} is not a safetensors file", code="corrupt_adapter") from None


def check_fits_engine(manifest: AdapterManifest, ref: str, info: EngineInfo) -> None:
    """Refuse an adapter the engine cannot serve: another base model, chat format or a rank
    above the engine's."""
    if manifest.base_model != info.model_id:
        raise AdapterError(
            f"{ref} was trained on {manifest.base_model!r}; the {info.base} engine runs "
            f"{info.model_id!r}",
            code="base_mismatch",
        )
    if manifest.chat_format != info.chat_format:
        raise AdapterError(
            f"{ref} expects chat format {manifest.chat_format}; the {info.base} engine "
            f"renders {info.chat_format}",
            code="chat_format_mismatch",
        )
    if manifest.lora.r > info.max_lora_rank:
        raise AdapterError(
            f"{ref} has LoRA rank {manifest.lora.r} > engine max_lora_rank {info.max_lora_rank}",
            code="rank_too_large",
        )
