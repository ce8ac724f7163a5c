"""Grouped LoRA kernels for vLLM's CPU backend, installed as a vLLM general plugin.

vLLM's PyTorch-native punica ops (``vllm.lora.ops.torch_ops``) gather a full ``(out, rank)``
LoRA matrix *per token* (``weights[indices]``) and contract with ``einsum``: for a 1,500-token
prefill that materializes 1,500 copies of every LoRA matrix, and LoRA costs 2.5× the base
model's time on CPU. Tokens almost always share a handful of adapters, so these replacements
group tokens by adapter slot and run one matrix product per slot: the same arithmetic, no
per-token copies.

Registered through the ``vllm.general_plugins`` entry point (pyproject.toml), so it is applied
in every vLLM process, the engine-core worker included. ``FORECAST_CPU_LORA_OPS=0`` keeps
vLLM's own ops (the benchmark's baseline).
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def _grouped(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``out[t] = weights[indices[t]] @ inputs[t]``, one matrix product per distinct index."""
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    inputs = inputs.to(dtype)
    slots = torch.unique(indices)
    if slots.numel() == 1:
        return inputs @ weights[slots[0]].to(dtype).t()
    out = torch.empty((inputs.shape[0], weights.shape[1]), dtype=dtype, device=inputs.device)
    for slot in slots.tolist():
        rows = (indices == slot).nonzero(as_tuple=True)[0]
        out[rows] = inputs[rows] @ weights[slot].to(dtype).t()
    return out


Tensor = torch.Tensor


def bgmv_shrink(
    inputs: Tensor, lora_a_weights: Tensor, output_tensor: Tensor, lora_indices_tensor: Tensor, scaling: float = 1.0
) -> None:
    outputs = _grouped(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(
    inputs: Tensor, lora_b_weights: Tensor, output_tensor: Tensor, lora_indices_tensor: Tensor, add_inputs: bool = True
) -> None:
    outputs = _grouped(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    common = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(
    inputs: Tensor, lora_b_weights: Tensor, output_tensor: Tensor, lora_indices_tensor: Tensor,
    slice_offset: int, slice_size: int, add_inputs: bool = True,
) -> None:
    outputs = _grouped(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs


def _explode(indices: torch.Tensor, seq_lens: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(indices, seq_lens)


def sgmv_shrink(
    inputs: Tensor, lora_a_weights: Tensor, output_tensor: Tensor, b_seq_start_loc: Tensor, seq_len_tensor: Tensor,
    lora_indices_tensor: Tensor, batches: int, max_seq_length: int, token_nums: int, scaling: float,
) -> None:
    bgmv_shrink(inputs, lora_a_weights, output_tensor, _explode(lora_indices_tensor, seq_len_tensor), scaling)


def sgmv_expand(
    inputs: Tensor, lora_b_weights: Tensor, output_tensor: Tensor, b_seq_start_loc: Tensor, seq_len_tensor: Tensor,
    lora_indices_tensor: Tensor, batches: int, max_seq_length: int, token_nums: int, add_inputs: bool = False,
) -> None:
    bgmv_expand(inputs, lora_b_weights, output_tensor, _explode(lora_indices_tensor, seq_len_tensor), add_inputs)


def sgmv_expand_slice(
    inputs: Tensor, lora_b_weights: Tensor, output_tensor: Tensor, b_seq_start_loc: Tensor, seq_len_tensor: Tensor,
    lora_indices_tensor: Tensor, batches: int, max_seq_length: int, token_nums: int,
    slice_offset: int, slice_size: int, add_inputs: bool = False,
) -> None:
    bgmv_expand_slice(
        inputs, lora_b_weights, output_tensor, _explode(lora_indices_tensor, seq_len_tensor),
        slice_offset, slice_size, add_inputs,
    )


REPLACEMENTS = {
    "bgmv_shrink": bgmv_shrink,
    "bgmv_expand": bgmv_expand,
    "bgmv_expand_slice": bgmv_expand_slice,
    "sgmv_shrink": sgmv_shrink,
    "sgmv_expand": sgmv_expand,
    "sgmv_expand_slice": sgmv_expand_slice,
}


def register() -> None:
    """vLLM general-plugin hook: swap the CPU punica ops for the grouped ones."""
    if os.environ.get("FORECAST_CPU_LORA_OPS", "1") == "0":
        return
    try:
        from vllm.lora.ops import torch_ops
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # a vLLM without the CPU punica wrapper: nothing to patch
        return
    for name, fn in REPLACEMENTS.items():
        for module in (lora_ops, torch_ops, punica_cpu):
            if hasattr(module, name):
                setattr(module, name, fn)
    log.info("grouped CPU LoRA ops installed")
