"""Folding math: difference LoRAs, peft scaling, vLLM's packed slices, and the worker's fold
and exact restoration on a small module tree shaped like vLLM's (packed q/k/v, gate/up)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch

from service.fold import (
    FoldError,
    LoraFactors,
    difference,
    lora_scale,
    read_lora,
    slice_rows,
    vllm_target,
    write_difference,
    write_lora,
)
from service.fold_worker import FoldWorkerExtension

HIDDEN, HEADS_Q, HEADS_KV, INTER = 8, 8, 4, 12
SHAPES = {  # peft module -> (out, in)
    "model.layers.0.self_attn.q_proj": (HEADS_Q, HIDDEN),
    "model.layers.0.self_attn.k_proj": (HEADS_KV, HIDDEN),
    "model.layers.0.self_attn.v_proj": (HEADS_KV, HIDDEN),
    "model.layers.0.self_attn.o_proj": (HIDDEN, HIDDEN),
    "model.layers.0.mlp.gate_proj": (INTER, HIDDEN),
    "model.layers.0.mlp.up_proj": (INTER, HIDDEN),
    "model.layers.0.mlp.down_proj": (HIDDEN, INTER),
}


def factors(modules: list[str], rank: int, scale: float, seed: int) -> LoraFactors:
    g = torch.Generator().manual_seed(seed)
    return LoraFactors(
        {m: (torch.randn(rank, SHAPES[m][1], generator=g), torch.randn(SHAPES[m][0], rank, generator=g))
         for m in modules},
        scale, rank,
    )


def full(f: LoraFactors | None, module: str) -> torch.Tensor:
    if f is None or module not in f.modules:
        return torch.zeros(SHAPES[module], dtype=torch.float64)
    a, b = f.modules[module]
    return f.scale * (b.double() @ a.double())


def test_difference_turns_the_folded_weights_into_the_versions() -> None:
    weights = {m: torch.randn(shape, dtype=torch.float64) for m, shape in SHAPES.items()}
    v = factors(["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.gate_proj",
                 "model.layers.0.self_attn.v_proj"], 4, 2.0, 1)
    p = factors(["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.o_proj",
                 "model.layers.0.self_attn.v_proj"], 8, 0.5, 2)
    d = difference(v, p)
    assert d.rank == 12 and d.scale == 1.0
    assert set(d.modules) == set(v.modules) | set(p.modules)
    for module, w in weights.items():
        folded = w + full(p, module)
        served = folded + (full(d, module) if module in d.modules else 0)
        torch.testing.assert_close(served, w + full(v, module), rtol=0, atol=1e-5)


def test_plain_base_is_the_negated_fold() -> None:
    p = factors(list(SHAPES), 8, 2.0, 3)
    d = difference(None, p)
    assert d.rank == 8
    for module in SHAPES:
        torch.testing.assert_close(full(p, module) + full(d, module), torch.zeros(SHAPES[module], dtype=torch.float64),
                                   rtol=0, atol=1e-5)


def test_written_difference_reads_back_as_a_peft_adapter(tmp_path: Path) -> None:
    v, p = factors(["model.layers.0.self_attn.q_proj"], 4, 4.0, 4), factors(["model.layers.0.self_attn.k_proj"], 8, 2.0, 5)
    write_lora(v, tmp_path / "v")
    write_lora(p, tmp_path / "p")
    back = read_lora(tmp_path / "v")
    assert back.scale == pytest.approx(4.0) and back.rank == 4
    d = read_lora(write_difference(tmp_path / "v", tmp_path / "p", tmp_path / "d"))
    config = json.loads((tmp_path / "d" / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 12 and config["target_modules"] == ["k_proj", "q_proj"]
    for module in ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"):
        torch.testing.assert_close(full(d, module), full(v, module) - full(p, module), rtol=0, atol=1e-5)


def test_peft_scaling_honours_rslora() -> None:
    assert lora_scale({"r": 8, "lora_alpha": 16}) == 2.0
    assert lora_scale({"r": 16, "lora_alpha": 16, "use_rslora": True}) == 4.0
    with pytest.raises(FoldError):
        lora_scale({"r": 0, "lora_alpha": 16})


def test_refuses_what_cannot_be_folded(tmp_path: Path) -> None:
    write_lora(factors(["model.layers.0.self_attn.q_proj"], 4, 1.0, 6), tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps(config | {"rank_pattern": {"q_proj": 2}}))
    with pytest.raises(FoldError, match="rank_pattern"):
        read_lora(tmp_path)


def test_peft_names_map_onto_vllms_packed_slices() -> None:
    packed = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
    layer = "model.layers.3.self_attn"
    assert vllm_target(f"{layer}.q_proj", packed).slice_index == 0
    assert vllm_target(f"{layer}.v_proj", packed).module == f"{layer}.qkv_proj"
    assert vllm_target(f"{layer}.v_proj", packed).slice_index == 2
    assert vllm_target("model.layers.3.mlp.up_proj", packed).module == "model.layers.3.mlp.gate_up_proj"
    assert vllm_target(f"{layer}.o_proj", packed).slice_index is None
    assert slice_rows([32, 8, 8], 0, 48) == (0, 32)
    assert slice_rows([32, 8, 8], 2, 48) == (40, 48)
    assert slice_rows(None, None, 48) == (0, 48)


# -- the worker on a vLLM-shaped module tree -------------------------------------------------


class Linear(torch.nn.Module):
    def __init__(self, out: int, inp: int, output_sizes: list[int] | None = None) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(out, inp).to(torch.bfloat16), requires_grad=False)
        if output_sizes is not None:
            self.output_sizes = output_sizes


class PackedMethod:
    """Like vLLM's CPU linear method: after loading, the weight is packed away and emptied."""

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        packed = layer.weight.detach().t().contiguous().clone()
        layer.cpu_linear = lambda x, weight, bias: x @ packed
        layer.weight = torch.nn.Parameter(torch.empty(0, dtype=packed.dtype), requires_grad=False)


class PackedLinear(Linear):
    def __init__(self, out: int, inp: int, output_sizes: list[int] | None = None) -> None:
        super().__init__(out, inp, output_sizes)
        self.input_size_per_partition, self.output_size_per_partition = inp, out
        self.quant_method = PackedMethod()
        self.quant_method.process_weights_after_loading(self)


class WithLoRA(torch.nn.Module):  # vLLM's LoRA wrappers keep the layer as base_layer
    def __init__(self, base_layer: Linear) -> None:
        super().__init__()
        self.base_layer = base_layer


class Model(torch.nn.Module):
    packed_modules_mapping: ClassVar[dict[str, list[str]]] = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}

    def __init__(self, qkv: type[Linear] = Linear) -> None:
        super().__init__()
        layer = torch.nn.Module()
        layer.self_attn = torch.nn.Module()
        layer.self_attn.qkv_proj = WithLoRA(qkv(HEADS_Q + 2 * HEADS_KV, HIDDEN, [HEADS_Q, HEADS_KV, HEADS_KV]))
        layer.self_attn.o_proj = WithLoRA(Linear(HIDDEN, HIDDEN))
        layer.mlp = torch.nn.Module()
        layer.mlp.gate_up_proj = WithLoRA(Linear(2 * INTER, HIDDEN, [INTER, INTER]))
        layer.mlp.down_proj = WithLoRA(Linear(HIDDEN, INTER))
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList([layer])


class Worker(FoldWorkerExtension):
    def __init__(self, model: Model) -> None:
        self.model_runner = SimpleNamespace(get_model=lambda: model)


def test_worker_folds_packed_slices_and_restores_bit_for_bit(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Model()
    worker = Worker(model)
    pristine = worker.forecast_weights_checksum()
    qkv = model.model.layers[0].self_attn.qkv_proj.base_layer.weight
    gate_up = model.model.layers[0].mlp.gate_up_proj.base_layer.weight
    before_qkv, before_gate_up = qkv.detach().clone(), gate_up.detach().clone()
    p = factors(list(SHAPES), 4, 2.0, 7)
    q = factors(["model.layers.0.self_attn.k_proj", "model.layers.0.mlp.up_proj"], 4, 2.0, 8)
    write_lora(p, tmp_path / "p")
    write_lora(q, tmp_path / "q")

    assert worker.forecast_prepare_fold(str(tmp_path / "p")) == len(SHAPES)
    worker.forecast_fold(str(tmp_path / "p"))
    k = p.delta("model.layers.0.self_attn.k_proj")
    expected_k = (before_qkv[HEADS_Q : HEADS_Q + HEADS_KV].float() + k).to(torch.bfloat16)
    assert torch.equal(qkv[HEADS_Q : HEADS_Q + HEADS_KV], expected_k)
    up = p.delta("model.layers.0.mlp.up_proj")
    assert torch.equal(gate_up[INTER:], (before_gate_up[INTER:].float() + up).to(torch.bfloat16))
    assert worker.forecast_weights_checksum() != pristine

    worker.forecast_prepare_fold(str(tmp_path / "q"))
    assert worker.forecast_fold(str(tmp_path / "q")) == str(tmp_path / "p")
    assert torch.equal(qkv[:HEADS_Q], before_qkv[:HEADS_Q])  # q untouched by q's adapter: p undone
    worker.forecast_fold(None)
    assert worker.forecast_weights_checksum() == pristine
    assert torch.equal(qkv, before_qkv) and torch.equal(gate_up, before_gate_up)


def test_failed_fold_restores_the_previous_one(tmp_path: Path) -> None:
    torch.manual_seed(1)
    worker = Worker(Model())
    write_lora(factors(["model.layers.0.self_attn.q_proj"], 4, 1.0, 9), tmp_path / "p")
    worker.forecast_prepare_fold(str(tmp_path / "p"))
    worker.forecast_fold(str(tmp_path / "p"))
    folded = worker.forecast_weights_checksum()
    bad = factors(["model.layers.0.self_attn.q_proj"], 4, 1.0, 10)
    bad.modules["model.layers.0.self_attn.q_proj"] = (torch.randn(4, HIDDEN), torch.randn(HEADS_Q + 1, 4))
    write_lora(bad, tmp_path / "bad")
    with pytest.raises(FoldError):
        worker.forecast_fold(str(tmp_path / "bad"))
    assert worker.forecast_folded() == str(tmp_path / "p")
    assert worker.forecast_weights_checksum() == folded
    worker.forecast_fold(None)
    with pytest.raises(FoldError, match="no layer"):
        write_lora(LoraFactors({"model.layers.9.self_attn.q_proj": (torch.ones(1, HIDDEN), torch.ones(HEADS_Q, 1))},
                               1.0, 1), tmp_path / "elsewhere")
        worker.forecast_prepare_fold(str(tmp_path / "elsewhere"))


def test_prepacked_cpu_weights_are_read_back_folded_and_repacked(tmp_path: Path) -> None:
    from service.fold_worker import read_weight

    torch.manual_seed(2)
    model = Model(qkv=PackedLinear)
    worker = Worker(model)
    qkv = model.model.layers[0].self_attn.qkv_proj.base_layer
    before = read_weight(qkv).clone()
    pristine = worker.forecast_weights_checksum()
    p = factors(["model.layers.0.self_attn.v_proj"], 4, 2.0, 11)
    write_lora(p, tmp_path / "p")
    worker.forecast_prepare_fold(str(tmp_path / "p"))
    worker.forecast_fold(str(tmp_path / "p"))
    x = torch.randn(3, HIDDEN).to(torch.bfloat16)
    expected = before.clone()
    expected[HEADS_Q + HEADS_KV :] = (before[HEADS_Q + HEADS_KV :].float()
                                      + p.delta("model.layers.0.self_attn.v_proj")).to(torch.bfloat16)
    assert qkv.weight.numel() == 0  # packed again
    assert torch.equal(qkv.cpu_linear(x, qkv.weight, None), x @ expected.t())
    worker.forecast_fold(None)
    assert worker.forecast_weights_checksum() == pristine and torch.equal(read_weight(qkv), before)
