"""The GPU recipe's token savings: packed rows and answer-only logits.

Packed rows: several examples per row, no attention and no target across them.

A FinGPT example is ~1,900 tokens of a 4,096-token row, so one example per row wastes half the
GPU on padding (or, unpadded, leaves the GEMMs half the size). :func:`pack_records` places the
encoded examples (``input_ids`` + ``labels``, prompt at -100, see ``training.data``) into rows of
at most ``capacity`` tokens, first-fit-decreasing, never splitting or dropping one; each example
keeps its own ``position_ids`` from 0 and its first label is -100, so no example is the target of
the one before it. :func:`flatten_batch` (the collator) joins a micro-batch of rows into one row,
no padding and no attention mask, and adds the varlen kwargs derived from the position ids
(``cu_seq_lens_q/k``, ``max_length_q/k``), as transformers' ``DataCollatorWithFlattening(
return_flash_attn_kwargs=True)`` does.

The attention sees the example boundaries through :data:`PACKED_ATTENTION`, an attention
function registered with ``transformers.AttentionInterface``: on a CUDA device in bf16/fp16 it
calls torch's flash varlen kernel (``torch.nn.attention.varlen.varlen_attn``, torch >= 2.10)
with those ``cu_seq_lens``; anywhere else (CPU, fp32, older torch) it runs SDPA with a
block-diagonal causal mask built from the position ids. The flash-attn package's own
``flash_attention_2/3`` paths read the same kwargs, so they are kept when asked for.
Measured on an H100 (benchmarks/gpu/NOTES.md): 2.3x real samples/s over one example per row.

Answer-only logits (:func:`answer_only_loss`): lm_head and the cross-entropy only where the label
is an answer token (~20 % of a FinGPT row); -4-5 % step time and -6 GiB on the 8B.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from training.data import IGNORE_INDEX

PACKED_ATTENTION = "packed_varlen"  # the name registered with transformers.AttentionInterface


# -- rows ------------------------------------------------------------------------------------------
def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into rows of at most ``capacity`` tokens: longest first, each
    into the first row with room. Every index lands in exactly one row (in ascending order)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        if not 0 < n <= capacity:
            raise ValueError(f"example {i} has {n} tokens; a row holds 1..{capacity}")
        for r, left in enumerate(room):
            if n <= left:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(capacity - n)
    return [sorted(r) for r in rows]


def pack_records(records: Sequence[Mapping[str, Sequence[int]]], capacity: int) -> list[dict[str, list[int]]]:
    """Rows of ``input_ids``, ``labels`` and ``position_ids`` (0 at each example's first token,
    whose label is -100: the previous example's last token predicts nothing across the seam)."""
    rows = []
    for members in first_fit_decreasing([len(r["input_ids"]) for r in records], capacity):
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for i in members:
            n = len(records[i]["input_ids"])
            ids += records[i]["input_ids"]
            labels += [IGNORE_INDEX, *records[i]["labels"][1:]]
            positions += range(n)
        rows.append({"input_ids": ids, "labels": labels, "position_ids": positions})
    return rows


def flatten_batch(features: Sequence[Mapping[str, Sequence[int]]]) -> dict[str, Any]:
    """The collator: a micro-batch of rows (packed or single examples) as one unpadded row, with
    the varlen kwargs of its segments. An ``attention_mask``, if any, is dropped (rows are never
    padded here)."""
    import torch

    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for f in features:
        n = len(f["input_ids"])
        ids += f["input_ids"]
        labels += f["labels"]
        positions += f["position_ids"] if "position_ids" in f else range(n)
    position_ids = torch.tensor([positions])
    label_ids = torch.tensor([labels])
    label_ids[position_ids == 0] = IGNORE_INDEX  # the seams between rows too
    return {
        "input_ids": torch.tensor([ids]),
        "labels": label_ids,
        "position_ids": position_ids,
        **varlen_kwargs(position_ids),
    }


def varlen_kwargs(position_ids: Any) -> dict[str, Any]:
    """``cu_seq_lens_q/k`` (int32 offsets of every segment: a new one where the position is 0)
    and ``max_length_q/k`` of one flattened row."""
    import torch

    flat = position_ids.reshape(-1)
    starts = (flat == 0).nonzero().reshape(-1)
    cu = torch.cat([starts, torch.tensor([flat.numel()], device=flat.device)]).to(torch.int32)
    longest = int((cu[1:] - cu[:-1]).max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


# -- attention -------------------------------------------------------------------------------------
@functools.cache
def _varlen() -> tuple[Callable[..., Any], dict[str, Any], bool] | None:
    """torch's varlen flash attention, the keyword arguments that make it causal in this torch
    build, and whether it takes grouped KV heads; None without it (torch < 2.10)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    causal: dict[str, Any] = {}
    if "window_size" in params:  # torch >= 2.12: (left, right) window; (-1, 0) is causal
        causal["window_size"] = (-1, 0)
    elif "is_causal" in params:  # torch 2.10 / 2.11
        causal["is_causal"] = True
    gqa = "enable_gqa" in params
    if gqa:
        causal["enable_gqa"] = True
    return varlen_attn, causal, gqa


def uses_varlen_kernel(query: Any) -> bool:
    import torch

    return bool(query.is_cuda and query.dtype in (torch.bfloat16, torch.float16) and _varlen() is not None)


def packed_attention_forward(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
    dropout: float = 0.0, scaling: float | None = None, **kwargs: Any,
) -> tuple[Any, None]:
    """A transformers attention function (``query`` ``(b, heads, s, d)``, output ``(b, s, heads,
    d)``) attending only within the segments the position ids mark. Training only (no KV cache)."""
    if query.shape[2] != key.shape[2]:
        raise NotImplementedError(f"{PACKED_ATTENTION} attention is for training rows, not cached decoding")
    if uses_varlen_kernel(query):
        if dropout:
            raise NotImplementedError("varlen attention has no dropout")
        return _varlen_forward(query, key, value, scaling, kwargs), None
    return _masked_sdpa(query, key, value, kwargs.get("position_ids"), dropout, scaling), None


def _varlen_forward(query: Any, key: Any, value: Any, scaling: float | None, kwargs: dict[str, Any]) -> Any:
    import torch

    found = _varlen()
    assert found is not None
    varlen_attn, causal, gqa = found
    cu: Any = kwargs.get("cu_seq_lens_q")
    longest: Any = kwargs.get("max_length_q")
    if cu is None:  # not from flatten_batch: derive them (a host sync per layer)
        derived = varlen_kwargs(kwargs["position_ids"])
        cu, longest = derived["cu_seq_lens_q"], derived["max_length_q"]
    b, hq, s, d = query.shape
    hk = key.shape[1]
    q = query.transpose(1, 2).reshape(b * s, hq, d)
    k = key.transpose(1, 2).reshape(b * s, hk, d)
    v = value.transpose(1, 2).reshape(b * s, hk, d)
    if hk != hq and not gqa:
        k = k.repeat_interleave(hq // hk, dim=1)
        v = v.repeat_interleave(hq // hk, dim=1)
    cu = cu.to(device=q.device, dtype=torch.int32)
    out = varlen_attn(q, k, v, cu, cu, int(longest), int(longest), scale=scaling, **causal)
    if isinstance(out, tuple):
        out = out[0]
    return out.reshape(b, s, hq, d)


def _masked_sdpa(
    query: Any, key: Any, value: Any, position_ids: Any, dropout: float, scaling: float | None
) -> Any:
    """SDPA under a block-diagonal causal mask: token i sees token j iff j <= i and no position 0
    lies in (j, i]."""
    import torch
    import torch.nn.functional as F

    s = query.shape[2]
    causal = torch.ones(s, s, dtype=torch.bool, device=query.device).tril()
    if position_ids is None:
        mask = causal[None, None]
    else:
        segment = (position_ids == 0).cumsum(-1).to(query.device)  # (b, s)
        mask = ((segment[:, :, None] == segment[:, None, :]) & causal)[:, None]
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling,
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return out.transpose(1, 2).contiguous()


def register_packed_attention() -> str:
    """Register :func:`packed_attention_forward` (idempotent); its name for ``attn_implementation``.
    No mask function is registered: transformers then builds no mask for it."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)
    return PACKED_ATTENTION


def packed_attn_implementation(requested: str | None) -> str:
    """The attention implementation a packed run uses: flash-attn's own paths (they read the same
    varlen kwargs) as asked, else :data:`PACKED_ATTENTION`."""
    if requested is not None and requested.startswith("flash_attention"):
        return requested
    return register_packed_attention()


# -- answer-only logits ----------------------------------------------------------------------------
def answer_only_loss(
    model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None
) -> tuple[Any, Any]:
    """Cross-entropy with lm_head applied only where the (shifted) label is an answer token.

    ~80 % of a FinGPT row is prompt (label -100): its logits are never needed. The positions go to
    the model as ``logits_to_keep`` (an index tensor), so the call runs through every wrapper as
    is (deepspeed engine → peft → the causal LM). Same value as transformers' ``ForCausalLMLoss``:
    fp32 logits, summed and divided by ``num_items_in_batch`` when given, else the mean over this
    micro-batch's answer targets.
    """
    import torch.nn.functional as F

    targets = inputs["labels"][:, 1:]  # position t predicts token t + 1
    keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().reshape(-1)
    outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, logits_to_keep=keep)
    logits = outputs.logits.float()
    picked = targets[:, keep]
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), picked.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    if num_items_in_batch is None:
        return loss / (picked != IGNORE_INDEX).sum(), outputs
    if hasattr(num_items_in_batch, "to"):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch, outputs
