"""The grouped CPU LoRA ops compute exactly what vLLM's own torch ops compute."""

import pytest
import torch

from service import cpu_lora_ops as grouped

ref = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")


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

    monkeypatch.setattr(punica_cpu, "bgmv_shrink", ref.bgmv_shrink)
    monkeypatch.setenv("FORECAST_CPU_LORA_OPS", "0")
    grouped.register()
    assert punica_cpu.bgmv_shrink is ref.bgmv_shrink  # opt-out keeps vLLM's op
    monkeypatch.setenv("FORECAST_CPU_LORA_OPS", "1")
    grouped.register()
    assert punica_cpu.bgmv_shrink is grouped.bgmv_shrink
