"""Serving the promoted version at base speed: LoRA factors, difference adapters, packed slices.

Route. The version an adapter's own alias is promoted to carries almost all traffic, and a
LoRA request costs 21-44 % more time than a base request on the GPU (1.18x on CPU with the
product's fused path). So that version is *folded*: its ``s·B·A`` is added to the engine's base
weights in place (``service.fold_worker``, run in the engine's worker through vLLM's
``collective_rpc``, as RLHF trainers update weights), and its requests go to the engine with no
LoRA at all. Every other loaded version ``v`` of that base is still served exactly, as the LoRA
of the difference from the folded version ``p``::

    W + s_v·B_v·A_v  =  (W + s_p·B_p·A_p) + [s_v·B_v, -s_p·B_p] · [A_v; A_p]

a LoRA of rank ``r_v + r_p`` whose alpha equals its rank (scale 1); the plain base, if asked,
is the LoRA ``-s_p·B_p·A_p``. A second engine holding merged weights, the other route, would
double the GPU memory of a base and move traffic between engines at every promote; folding
keeps one engine, one KV cache and vLLM's own LoRA path for the rest.

This module is the host side: read a peft adapter into its factors, build the difference, write
it as a peft directory vLLM loads like any adapter, and map peft's module names onto vLLM's
packed layers (``q/k/v_proj`` are slices of ``qkv_proj``, ``gate/up_proj`` of ``gate_up_proj``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PEFT_CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
# vLLM's packing of Llama-family projections (``LlamaForCausalLM.packed_modules_mapping``);
# the worker reads the model's own mapping, this is the default for host-side checks.
LLAMA_PACKED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


class FoldError(Exception):
    """An adapter that cannot be folded (unsupported peft options, unknown modules)."""


@dataclass(frozen=True)
class LoraFactors:
    """One adapter as ``{module: (A (r, in), B (out, r))}`` in float32 and its scale."""

    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    scale: float
    rank: int
    base_model: str = ""

    def delta(self, module: str) -> torch.Tensor:
        """``scale · B · A`` of one module, float32."""
        a, b = self.modules[module]
        return self.scale * (b @ a)


def lora_scale(config: dict[str, object]) -> float:
    """peft's scaling: ``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with rsLoRA."""
    r, alpha = config["r"], config["lora_alpha"]
    if not isinstance(r, int) or not isinstance(alpha, int | float) or r <= 0:
        raise FoldError(f"adapter config has no usable r / lora_alpha: {r!r} / {alpha!r}")
    return float(alpha) / (math.sqrt(r) if config.get("use_rslora") else r)


def read_lora(path: Path) -> LoraFactors:
    """The factors of the peft LoRA in ``path`` (float32), refusing what cannot be folded."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((path / PEFT_CONFIG).read_text())
    for option in ("rank_pattern", "alpha_pattern"):
        if config.get(option):
            raise FoldError(f"{path.name}: per-module {option} is not supported by folding")
    if config.get("use_dora"):
        raise FoldError(f"{path.name}: DoRA adapters cannot be folded")
    tensors = load_file(str(path / WEIGHTS))
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in sorted(tensors):
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removeprefix(_PREFIX).removesuffix(".lora_A.weight")
        b_key = key.replace(".lora_A.weight", ".lora_B.weight")
        if b_key not in tensors:
            raise FoldError(f"{path.name}: {module} has lora_A but no lora_B")
        modules[module] = (tensors[key].to(torch.float32), tensors[b_key].to(torch.float32))
    leftovers = [k for k in tensors if ".lora_A." not in k and ".lora_B." not in k]
    if leftovers:
        raise FoldError(f"{path.name}: tensors other than LoRA factors ({leftovers[0]}) cannot be folded")
    return LoraFactors(modules, lora_scale(config), int(config["r"]), str(config.get("base_model_name_or_path", "")))


def difference(version: LoraFactors | None, folded: LoraFactors) -> LoraFactors:
    """The LoRA that turns ``W + folded`` into ``W + version`` (``None``: the plain base).

    Per module ``A' = [A_v; A_p]``, ``B' = [s_v·B_v, -s_p·B_p]``, scale 1; a module only one
    side touches gets zeros in the other side's rows and columns, so every module has the same
    rank ``r_v + r_p`` (peft's one ``r``)."""
    import torch

    r_v = version.rank if version is not None else 0
    rank = r_v + folded.rank
    names = sorted(set(folded.modules) | set(version.modules if version is not None else ()))
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name in names:
        a_v, b_v = version.modules.get(name, (None, None)) if version is not None else (None, None)
        a_p, b_p = folded.modules.get(name, (None, None))
        ref_a = a_v if a_v is not None else a_p
        ref_b = b_v if b_v is not None else b_p
        assert ref_a is not None and ref_b is not None
        a = torch.zeros(rank, ref_a.shape[1], dtype=torch.float32)
        b = torch.zeros(ref_b.shape[0], rank, dtype=torch.float32)
        if a_v is not None and b_v is not None and version is not None:
            a[: a_v.shape[0]] = a_v
            b[:, : b_v.shape[1]] = version.scale * b_v
        if a_p is not None and b_p is not None:
            a[r_v : r_v + a_p.shape[0]] = a_p
            b[:, r_v : r_v + b_p.shape[1]] = -folded.scale * b_p
        modules[name] = (a, b)
    return LoraFactors(modules, 1.0, rank, folded.base_model)


def write_lora(factors: LoraFactors, dest: Path) -> Path:
    """``factors`` as a peft LoRA directory (``lora_alpha = r · scale``, float32 weights)."""
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, (a, b) in factors.modules.items():
        tensors[f"{_PREFIX}{name}.lora_A.weight"] = a.contiguous()
        tensors[f"{_PREFIX}{name}.lora_B.weight"] = b.contiguous()
    save_file(tensors, str(dest / WEIGHTS), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": factors.rank,
        "lora_alpha": factors.rank * factors.scale, "lora_dropout": 0.0, "bias": "none",
        "target_modules": sorted({name.rsplit(".", 1)[-1] for name in factors.modules}),
        "base_model_name_or_path": factors.base_model, "use_rslora": False, "use_dora": False,
        "fan_in_fan_out": False, "inference_mode": True,
    }
    (dest / PEFT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return dest


def write_difference(version: Path | None, folded: Path, dest: Path) -> Path:
    """The difference adapter of ``version`` (``None``: the plain base) against ``folded``."""
    return write_lora(difference(read_lora(version) if version is not None else None, read_lora(folded)), dest)


@dataclass(frozen=True)
class Target:
    """Where one peft module's delta goes in vLLM's model: rows ``[start, start + size)`` of
    ``module``'s weight (the whole weight when the layer is not packed)."""

    module: str
    slice_index: int | None  # position among the packed layer's parts, None when unpacked


def vllm_target(peft_module: str, packed: dict[str, tuple[str, ...]] | dict[str, list[str]]) -> Target:
    """``model.layers.0.self_attn.k_proj`` → ``Target("model.layers.0.self_attn.qkv_proj", 1)``."""
    parent, _, leaf = peft_module.rpartition(".")
    for packed_name, parts in packed.items():
        if leaf in parts:
            return Target(f"{parent}.{packed_name}" if parent else packed_name, list(parts).index(leaf))
    return Target(peft_module, None)


def slice_rows(output_sizes: list[int] | None, index: int | None, rows: int) -> tuple[int, int]:
    """``(start, stop)`` rows of a packed layer's part ``index`` (the whole weight when None)."""
    if index is None:
        return 0, rows
    if not output_sizes or index >= len(output_sizes):
        raise FoldError(f"packed layer has no part {index} (output sizes {output_sizes})")
    start = sum(output_sizes[:index])
    return start, start + output_sizes[index]
