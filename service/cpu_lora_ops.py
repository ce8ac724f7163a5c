"""Grouped LoRA kernels for vLLM's CPU backend, installed as a vLLM general plugin.

vLLM's PyTorch-native punica ops (``vllm.lora.ops.torch_ops``) gather a full ``(out, rank)``
LoRA matrix *per token* (``weights[indices]``) and contract with ``einsum``: for a 1,500-token
prefill that materializes 1,500 copies of every LoRA matrix, and LoRA costs 2.5× the base
model's time on CPU. Tokens almost always share a handful of adapters, so these replacements
group tokens by adapter slot and run one matrix product per slot: the same arithmetic, no
per-token copies.

The bigger cost on a small CPU model is not arithmetic but dispatch: vLLM's CPU punica wrapper
runs shrink and expand per slice (q, k, v separately), each re-deriving the token grouping
(``repeat_interleave``, ``unique``) and re-casting the activations, so a decode step pays
hundreds of tiny ops per layer. :func:`add_lora_linear` replaces the wrapper's method with a
fused one: the token grouping is worked out once per step (cached on the step's index
tensor), each layer's slices are stacked once per loaded adapter (cached until the stacked
weights change in place), and a layer's LoRA is then one shrink over all slices and one
expand through a block-diagonal B — two matrix products per adapter in the batch.

Registered through the ``vllm.general_plugins`` entry point (pyproject.toml), so it is applied
in every vLLM process, the engine-core worker included. ``FORECAST_CPU_LORA_OPS=0`` keeps
vLLM's own ops (the benchmark's baseline).
"""

from __future__ import annotations

import logging
import os
from typing import Any, cast

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


def _groups(wrapper: Any, n_tokens: int) -> list[tuple[int, Tensor | None]] | None:
    """``[(slot, rows)]`` of this step's tokens (``rows`` None: all of them); ``None`` when the
    wrapper's per-token mapping does not cover the input (then the stock path runs). Cached
    per step: the index buffer is rewritten in place each step, which bumps its version."""
    idx = wrapper.token_lora_indices
    if idx.numel() != n_tokens:
        return None
    key = (idx.data_ptr(), idx.numel(), idx._version)
    cached = wrapper.__dict__.get("_forecast_groups")
    if cached is not None and cached[0] == key:
        return cast("list[tuple[int, Tensor | None]]", cached[1])
    slots = [s for s in torch.unique(idx).tolist() if s >= 0]
    if len(slots) == 1 and bool((idx == slots[0]).all()):
        groups: list[tuple[int, Tensor | None]] = [(slots[0], None)]
    else:
        groups = [(s, (idx == s).nonzero(as_tuple=True)[0]) for s in slots]
    wrapper.__dict__["_forecast_groups"] = (key, groups)
    return groups


def _stacked(
    wrapper: Any, a_stacked: tuple[Tensor, ...], b_stacked: tuple[Tensor, ...], slot: int,
    output_slices: tuple[int, ...],
) -> tuple[Tensor, Tensor] | None:
    """This layer's slices of ``slot`` as one A (all ranks stacked) and one block-diagonal B,
    both float32 (small float32 GEMMs are fast on CPU, tiny bf16 ones are not); ``None`` when
    the adapter in the slot leaves this layer alone (vLLM wraps every linear layer, so an
    adapter of q/k/v/o still has zero-filled MLP slots). Rebuilt when an adapter is loaded
    into the slot (an in-place copy, which bumps the stacked tensors' versions)."""
    tensors = (*a_stacked, *b_stacked)
    key = (tuple(t.data_ptr() for t in tensors), slot)
    versions = tuple(t._version for t in tensors)
    cache = wrapper.__dict__.setdefault("_forecast_weights", {})
    hit = cache.get(key)
    if hit is not None and hit[0] == versions:
        return cast("tuple[Tensor, Tensor] | None", hit[1])
    a_parts = [(t[slot, 0] if t.dim() == 4 else t[slot]) for t in a_stacked]
    a = torch.cat(a_parts, 0).to(torch.float32)
    b = torch.zeros(sum(output_slices), a.shape[0], dtype=torch.float32, device=a.device)
    row = col = 0
    for part, t, size in zip(a_parts, b_stacked, output_slices, strict=True):
        w = t[slot, 0] if t.dim() == 4 else t[slot]
        b[row : row + size, col : col + part.shape[0]] = w[:size, : part.shape[0]]
        row, col = row + size, col + part.shape[0]
    weights = (a, b) if bool(a.any()) and bool(b.any()) else None
    cache[key] = (versions, weights)
    return weights


_STOCK_ADD_LORA_LINEAR: Any = None


def add_lora_linear(
    self: Any, y: Tensor, x: Tensor, lora_a_stacked: tuple[Tensor, ...],
    lora_b_stacked: tuple[Tensor, ...], scale: float, output_slices: tuple[int, ...],
    *, buffer: tuple[Tensor, ...] | None = None, **kwargs: Any,
) -> None:
    """``PunicaWrapperCPU.add_lora_linear``, fused: per adapter in the batch, one shrink over
    the layer's stacked slices and one expand through the block-diagonal B (float32, as the
    stock shrink), added to ``y`` in place — what the stock method computes slice by slice."""
    x2 = x.reshape(-1, x.shape[-1])
    y2 = y.view(-1, y.shape[-1])
    groups = _groups(self, x2.shape[0])
    if groups is None:
        _STOCK_ADD_LORA_LINEAR(
            self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, buffer=buffer, **kwargs
        )
        return
    width = sum(output_slices)
    for slot, rows in groups:
        weights = _stacked(self, lora_a_stacked, lora_b_stacked, slot, output_slices)
        if weights is None:
            continue
        a, b = weights
        xs = x2 if rows is None else x2.index_select(0, rows)
        shrunk = xs.to(torch.float32) @ a.t()
        if scale != 1.0:
            shrunk *= scale
        delta = (shrunk @ b.t()).to(y2.dtype)
        if rows is None:
            y2[:, :width] += delta
        else:
            y2[:, :width].index_add_(0, rows, delta)


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
    global _STOCK_ADD_LORA_LINEAR
    wrapper = punica_cpu.PunicaWrapperCPU
    if wrapper.add_lora_linear is not add_lora_linear:
        _STOCK_ADD_LORA_LINEAR = wrapper.add_lora_linear
        wrapper.add_lora_linear = add_lora_linear  # type: ignore[method-assign]  # the patch itself
    log.info("grouped CPU LoRA ops installed")
