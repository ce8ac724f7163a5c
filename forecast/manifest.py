"""``adapter.json``: the one schema of the adapter artifact, the only contract between training
and serving.

``<adapter_root>/<name>/<version>/`` holds the peft adapter (``adapter_config.json`` +
``adapter_model.safetensors``) and this manifest::

    {name, version, base_model, stands_in_for?, served_base, chat_format,
     lora {r, alpha, dropout, target_modules},
     data_window {train_start, train_end, eval_start, eval_end, weeks},
     metrics {eval_loss, mse, binary_accuracy, rouge, eval_samples_per_second, ...},
     code_revision, created_at}

``base_model`` is the model id actually trained (the tiny id on CPU, with ``stands_in_for``
the 8B id it replaces); ``served_base`` is the product's base key (a key of ``BASES``). Every
writer (training, the demo's stand-ins, the test stubs) builds an :class:`AdapterManifest`
and writes it with :func:`write_manifest`; the service reads it with :func:`load_manifest`.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from forecast.basemodels import known_base
from forecast.templates import ChatFormat

MANIFEST = "adapter.json"
SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a name or version: one path segment


class LoraShape(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    r: int = Field(ge=1)
    alpha: float = Field(gt=0, allow_inf_nan=False)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, allow_inf_nan=False)
    target_modules: list[str] = Field(min_length=1)


class AdapterManifest(BaseModel):
    """``adapter.json``. Unknown extra fields are kept, not rejected, so a newer trainer does
    not break an older service."""

    model_config = ConfigDict(frozen=True, extra="allow", protected_namespaces=())

    name: str = Field(pattern=SEGMENT.pattern)
    version: str = Field(pattern=SEGMENT.pattern)
    base_model: str = Field(min_length=1)  # the HF id the weights were trained on
    stands_in_for: str | None = None  # the 8B id a smaller trained model replaces
    served_base: str  # key of forecast.basemodels.BASES
    chat_format: ChatFormat
    lora: LoraShape
    data_window: dict[str, Any] | str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    code_revision: str | None = None
    created_at: dt.datetime | None = None

    @field_validator("served_base")
    @classmethod
    def _known_base(cls, value: str) -> str:
        return known_base(value)

    @field_serializer("created_at")
    def _iso(self, value: dt.datetime | None) -> str | None:
        return None if value is None else value.isoformat()  # "+00:00", as datetime writes it


def write_manifest(adapter_dir: Path, manifest: AdapterManifest) -> Path:
    """Write ``adapter_dir/adapter.json`` (``stands_in_for`` only where a model stands in)."""
    path = adapter_dir / MANIFEST
    leave_out = {"stands_in_for"} if manifest.stands_in_for is None else None
    path.write_text(manifest.model_dump_json(indent=2, exclude=leave_out))
    return path


def load_manifest(adapter_dir: Path) -> AdapterManifest:
    """Read and validate ``adapter_dir/adapter.json`` (pydantic's ``ValidationError`` if not)."""
    return AdapterManifest.model_validate_json((adapter_dir / MANIFEST).read_bytes())
