"""The adapter artifact training ships: the only contract between training and serving.

``<adapter_root>/<name>/<version>/`` holds the peft adapter (``adapter_config.json`` +
``adapter_model.safetensors``) and ``adapter.json``, whose one schema is
:class:`forecast.manifest.AdapterManifest` (the service reads it through the same model).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from forecast.manifest import MANIFEST, AdapterManifest, LoraShape, write_manifest
from training.config import RunSettings

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_VERSION = re.compile(r"^v(\d+)$")


def code_revision(repo: Path = Path(".")) -> str:
    """The checkout's git sha (``+dirty`` when training code has uncommitted edits)."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "training"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


def next_version(root: Path, name: str) -> str:
    """``v1``, then one above the highest ``v<N>`` already under ``root/name``."""
    taken = [int(m[1]) for p in (root / name).glob("v*") if (m := _VERSION.match(p.name))]
    return f"v{max(taken, default=0) + 1}"


def manifest_metrics(scored: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "step", "checkpoint", "train_loss", "eval_loss", "eval_samples_per_second", "mse",
        "binary_accuracy", "rouge", "generation_runtime", "generation_samples_per_second",
        "prediction_read",
    )
    return {k: scored[k] for k in keys if k in scored}


def build_manifest(
    run: RunSettings, version: str, window: dict[str, Any], scored: dict[str, Any]
) -> AdapterManifest:
    stands_in = run.model_id != run.base_model.model_id
    return AdapterManifest(
        name=run.adapter_name,
        version=version,
        base_model=run.model_id,
        stands_in_for=run.base_model.model_id if stands_in else None,
        served_base=run.base,
        chat_format=run.base_model.chat_format,
        lora=LoraShape(
            r=run.lora.r, alpha=run.lora.alpha, dropout=run.lora.dropout,
            target_modules=list(run.lora.target_modules),
        ),
        data_window={
            k: window[k] for k in ("train_start", "train_end", "eval_start", "eval_end", "weeks")
        },
        metrics=manifest_metrics(scored),
        code_revision=code_revision(),
        created_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
    )


def write_adapter(
    checkpoint: Path, run: RunSettings, window: dict[str, Any], scored: dict[str, Any],
    root: Path, version: str | None = None,
) -> Path:
    """Copy the checkpoint's adapter into ``root/name/version`` with its manifest; the
    directory appears complete or not at all (written aside, then renamed)."""
    version = version or next_version(root, run.adapter_name)
    dest = root / run.adapter_name / version
    if dest.exists():
        raise FileExistsError(f"{dest} exists: versions are immutable")
    tmp = dest.with_name(f".{version}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ADAPTER_FILES:
        shutil.copy2(checkpoint / name, tmp / name)
    config = json.loads((tmp / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = run.model_id  # not the trainer's local path
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
    write_manifest(tmp, build_manifest(run, version, window, scored))
    tmp.rename(dest)
    return dest


def read_manifest(adapter_dir: Path) -> dict[str, Any]:
    return dict(json.loads((adapter_dir / MANIFEST).read_text()))
