"""The packed-attention GPU path (torch's flash varlen kernel, bf16): each example of a packed row
gets the logits and loss it gets alone, also with the decoder layers compiled. Skipped without a
CUDA device or without ``torch.nn.attention.varlen`` (torch < 2.10); runnable without pytest:

    python tests/integration/training/test_packing_gpu.py
"""

from __future__ import annotations

import copy
import itertools
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from training.data import IGNORE_INDEX
from training.packing import (
    flatten_batch,
    pack_records,
    packed_attn_implementation,
    uses_varlen_kernel,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SHAPES = [(300, 120), (700, 200), (150, 40), (900, 300), (60, 30)]


def records(vocab: int) -> list[dict[str, list[int]]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for prompt, answer in SHAPES:
        ids = torch.randint(0, vocab, (prompt + answer,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return out


def models() -> tuple[Any, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8,
                      num_key_value_heads=2, vocab_size=1000, max_position_embeddings=4096, use_cache=False)
    with torch.device("cuda"):
        packed = LlamaForCausalLM._from_config(copy.deepcopy(cfg), attn_implementation=packed_attn_implementation(None),
                                               dtype=torch.bfloat16)
        alone = LlamaForCausalLM._from_config(copy.deepcopy(cfg), attn_implementation="sdpa", dtype=torch.bfloat16)
    alone.load_state_dict(packed.state_dict())
    return packed.eval(), alone.eval()


def compare(packed: Any, alone: Any) -> tuple[float, float, float]:
    """Largest logit difference over the segments, packed loss, token-weighted loss alone."""
    recs = records(packed.config.vocab_size)
    batch = {k: v.cuda() if hasattr(v, "cuda") else v for k, v in flatten_batch(pack_records(recs, 2048)).items()}
    cu = batch["cu_seq_lens_q"].tolist()
    worst, total, count = 0.0, 0.0, 0
    with torch.no_grad():
        out = packed(**batch)
        for a, b in itertools.pairwise(cu):
            ids = batch["input_ids"][:, a:b]
            labels = batch["labels"][:, a:b]
            ref = alone(input_ids=ids, labels=labels)
            worst = max(worst, (out.logits[0, a:b].float() - ref.logits[0].float()).abs().max().item())
            n = int((labels[:, 1:] != IGNORE_INDEX).sum())
            total, count = total + ref.loss.item() * n, count + n
    return worst, out.loss.item(), total / count


def test_varlen_kernel_is_used_and_matches_each_example_alone() -> None:
    packed, alone = models()
    probe = torch.zeros(1, 1, 1, 1, device="cuda", dtype=torch.bfloat16)
    if not uses_varlen_kernel(probe):
        pytest.skip("torch.nn.attention.varlen not in this torch")
    worst, loss, expected = compare(packed, alone)
    print(f"varlen: max logit diff {worst:.4f}, loss {loss:.5f} vs alone {expected:.5f}")
    assert worst < 0.1 and abs(loss - expected) < 5e-3  # bf16


def test_compiled_layers_with_varlen_match_and_take_new_lengths() -> None:
    packed, alone = models()
    for layer in packed.model.layers:
        layer.compile()
    worst, loss, expected = compare(packed, alone)
    print(f"compiled varlen: max logit diff {worst:.4f}, loss {loss:.5f} vs alone {expected:.5f}")
    assert worst < 0.1 and abs(loss - expected) < 5e-3
    packed.train()
    for n in (3, 4, 5):  # other row lengths: recompiled once as dynamic, then reused
        batch = flatten_batch(pack_records(records(packed.config.vocab_size)[:n], 2048))
        batch = {k: v.cuda() if hasattr(v, "cuda") else v for k, v in batch.items()}
        packed(**batch).loss.backward()


if __name__ == "__main__":
    for test in (test_varlen_kernel_is_used_and_matches_each_example_alone,
                 test_compiled_layers_with_varlen_match_and_take_new_lengths):
        test()
        print("ok", test.__name__)
