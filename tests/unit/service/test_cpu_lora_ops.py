"""The grouped CPU LoRA ops compute exactly what vLLM's own torch ops compute.

The reference is vLLM's ``lora_ops.py`` loaded afresh from its file under a private name: once
an engine has started in this process, the product's plugin has rebound the functions of the
imported ``vllm.lora.ops.torch_ops.lora_ops`` module to the very ops under test."""

import importlib.util

import pytest
import torch
from support.ci import require_module

from service import cpu_lora_ops as grouped

require_module("vllm", "the `serve` extra")


def _pristine_vllm_ops():
    spec = importlib.util.find_spec("vllm.lora.ops.torch_ops.lora_ops")
    assert spec is not None and spec.origin is not None
    fresh = importlib.util.spec_from_file_location("_pristine_vllm_lora_ops", spec.origin)
    assert fresh is not None and fresh.loader is not None
    module = importlib.util.module_from_spec(fresh)
    fresh.loader.exec_module(module)
    return module


ref = _pristine_vllm_ops()


def test_the_reference_is_not_the_op_under_test():
    for name in ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice", "sgmv_shrink", "sgmv_expand"):
        assert getattr(ref, name).__module__ == "_pristine_vllm_lora_ops"
        assert getattr(ref, name) is not getattr(grouped, name)


@pytest.fixture(params=[[0], [0, 1, 2], [2, -1, 0, 1]], ids=["one-adapter", "three", "with-no-lora-slot"])
def case(request):
    g = torch.Generator().manual_seed(0)
    n, d, r, slots = 37, 64, 8, 3
    idx = torch.tensor([request.param[i % len(request.param)] for i in range(n)])
    return {
        "x": torch.randn(n, d, generator=g),
        "a": torch.randn(slots, 1, r, d, generator=g),
        "b": torch.randn(slots, 1, d, r, generator=g),
        "idx": idx,
        "n": n, "d": d, "r": r,
    }


def test_shrink_and_expand_match(case):
    y_ref, y_new = torch.zeros(case["n"], case["r"]), torch.zeros(case["n"], case["r"])
    ref.bgmv_shrink(case["x"], case["a"], y_ref, case["idx"], 0.5)
    grouped.bgmv_shrink(case["x"], case["a"], y_new, case["idx"], 0.5)
    torch.testing.assert_close(y_new, y_ref)
    z_ref = torch.randn(case["n"], case["d"])
    z_new = z_ref.clone()
    ref.bgmv_expand(y_ref, case["b"], z_ref, case["idx"], True)
    grouped.bgmv_expand(y_ref, case["b"], z_new, case["idx"], True)
    torch.testing.assert_close(z_new, z_ref)


def test_expand_slice_matches(case):
    y = torch.randn(case["n"], case["r"])
    w_ref = torch.randn(case["n"], 3 * case["d"])
    w_new = w_ref.clone()
    ref.bgmv_expand_slice(y, case["b"], w_ref, case["idx"], case["d"], case["d"], True)
    grouped.bgmv_expand_slice(y, case["b"], w_new, case["idx"], case["d"], case["d"], True)
    torch.testing.assert_close(w_new, w_ref)


def test_segmented_variants_match(case):
    seq = torch.tensor([10, case["n"] - 10])
    lora = torch.tensor([case["idx"][0].item(), case["idx"][-1].item()])
    y_ref, y_new = torch.zeros(case["n"], case["r"]), torch.zeros(case["n"], case["r"])
    ref.sgmv_shrink(case["x"], case["a"], y_ref, None, seq, lora, 2, 27, case["n"], 0.5)
    grouped.sgmv_shrink(case["x"], case["a"], y_new, None, seq, lora, 2, 27, case["n"], 0.5)
    torch.testing.assert_close(y_new, y_ref)
    z_ref = torch.zeros(case["n"], case["d"])
    z_new = z_ref.clone()
    ref.sgmv_expand(y_ref, case["b"], z_ref, None, seq, lora, 2, 27, case["n"])
    grouped.sgmv_expand(y_ref, case["b"], z_new, None, seq, lora, 2, 27, case["n"])
    torch.testing.assert_close(z_new, z_ref)


def test_register_patches_the_cpu_punica_wrapper(monkeypatch):
    from vllm.lora.punica_wrapper import punica_cpu

    wrapper = punica_cpu.PunicaWrapperCPU
    monkeypatch.setattr(wrapper, "add_lora_linear", wrapper.add_lora_linear)  # restored after
    monkeypatch.setattr(punica_cpu, "bgmv_shrink", ref.bgmv_shrink)
    monkeypatch.setenv("FORECAST_CPU_LORA_OPS", "0")
    grouped.register()
    assert punica_cpu.bgmv_shrink is ref.bgmv_shrink  # opt-out keeps vLLM's op
    monkeypatch.setenv("FORECAST_CPU_LORA_OPS", "1")
    grouped.register()
    assert punica_cpu.bgmv_shrink is grouped.bgmv_shrink
    assert wrapper.add_lora_linear is grouped.add_lora_linear


# -- the fused add_lora_linear ------------------------------------------------------------


def _wrapper(idx: torch.Tensor):
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    w = PunicaWrapperCPU(max_num_batched_tokens=64, max_batches=8, device="cpu")
    w._token_lora_indices[: idx.numel()].copy_(idx)
    w.indices_len = [idx.numel()] * 4
    return w


def _layer(slots: int, r: int, d: int, sizes: tuple[int, ...], seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    a = tuple(torch.randn(slots, 1, r, d, generator=g) for _ in sizes)
    b = tuple(torch.randn(slots, 1, size, r, generator=g) for size in sizes)
    return a, b


def _reference(y, x, a, b, idx, scale, sizes):
    """The semantics vLLM documents: per token, per slice, y += (x @ A^T * scale) @ B^T."""
    out = y.clone()
    for t, slot in enumerate(idx.tolist()):
        if slot < 0:
            continue
        off = 0
        for ai, bi, size in zip(a, b, sizes, strict=True):
            out[t, off : off + size] += ((x[t] @ ai[slot, 0].T) * scale) @ bi[slot, 0].T
            off += size
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_add_lora_linear_matches_the_per_slice_semantics(case, dtype):
    sizes = (case["d"], case["d"] // 2, case["d"] // 2)  # q, k, v
    a, b = _layer(3, case["r"], case["d"], sizes)
    a, b = tuple(t.to(dtype) for t in a), tuple(t.to(dtype) for t in b)
    x = case["x"].to(dtype)
    y = torch.randn(case["n"], sum(sizes)).to(dtype)
    expected = _reference(y.float(), x.float(), tuple(t.float() for t in a), tuple(t.float() for t in b),
                          case["idx"], 0.5, sizes)
    w = _wrapper(case["idx"])
    grouped.add_lora_linear(w, y, x, a, b, 0.5, sizes)
    tol = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 0.5, "rtol": 0.02}
    torch.testing.assert_close(y.float(), expected, **tol)


def test_fused_weights_follow_an_adapter_loaded_into_the_slot_in_place(case):
    sizes = (case["d"],)
    a, b = _layer(3, case["r"], case["d"], sizes)
    idx = torch.zeros(case["n"], dtype=torch.long)
    w = _wrapper(idx)
    y0 = torch.zeros(case["n"], case["d"])
    grouped.add_lora_linear(w, y0, case["x"], a, b, 1.0, sizes)
    a[0][0].mul_(2.0)  # how vLLM loads a new adapter into a slot: an in-place copy
    y1 = torch.zeros(case["n"], case["d"])
    grouped.add_lora_linear(w, y1, case["x"], a, b, 1.0, sizes)
    torch.testing.assert_close(y1, 2 * y0)
    w._token_lora_indices[: case["n"]].fill_(-1)  # next step: no token uses an adapter
    y2 = torch.zeros(case["n"], case["d"])
    grouped.add_lora_linear(w, y2, case["x"], a, b, 1.0, sizes)
    assert not y2.any()
