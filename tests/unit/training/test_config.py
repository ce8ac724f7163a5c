"""Every shipped training config loads and validates; defaults are FinGPT's recipe on ZeRO-2 +
AdamW; the 8B preset has the measured GPU knobs on."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import deepspeed
import pytest
from deepspeed.runtime.config import DeepSpeedConfig

from forecast.basemodels import BASES
from training.config import (
    CONFIG_DIR,
    DS_ZERO0_ZEROONE,
    DS_ZERO2_ADAMW,
    LoraSettings,
    RunSettings,
    deepspeed_optimizer,
    load_run,
    require_supported_optimizer,
    run_from_dict,
)

DS_CONFIGS = sorted(CONFIG_DIR.glob("ds_*.json"))
RUN_PRESETS = sorted(p for p in CONFIG_DIR.glob("*.json") if not p.name.startswith("ds_"))


def resolve_auto(cfg: dict[str, Any]) -> dict[str, Any]:
    """What the HF Trainer does to "auto" values before deepspeed sees the config."""
    filled = copy.deepcopy(cfg)
    filled.update(train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=4, train_batch_size=4)

    def fill(d: dict[str, Any]) -> None:
        for key, value in d.items():
            if isinstance(value, dict):
                fill(value)
            elif value == "auto":
                d[key] = {"enabled": False, "betas": [0.9, 0.999], "eps": 1e-8}.get(key, 1e-4)

    fill(filled)
    return filled


def test_all_configs_are_covered() -> None:
    assert {p.name for p in DS_CONFIGS} == {"ds_zero0_zeroone.json", "ds_zero2_adamw.json"}
    assert {p.name for p in RUN_PRESETS} >= {"cpu_tiny.json", "gpu_8b.json"}


@pytest.mark.parametrize("path", DS_CONFIGS, ids=lambda p: p.name)
def test_deepspeed_config_parses(path: Path) -> None:
    raw = json.loads(path.read_text())
    parsed = DeepSpeedConfig(resolve_auto(raw))
    expected = {"ds_zero0_zeroone.json": (0, "ZeroOneAdam"), "ds_zero2_adamw.json": (2, "adamw")}
    assert (parsed.zero_optimization_stage, parsed.optimizer_name) == expected[path.name]
    assert parsed.train_batch_size == 4


@pytest.mark.parametrize("path", RUN_PRESETS, ids=lambda p: p.name)
def test_run_preset_loads_and_validates(path: Path) -> None:
    for base in BASES:
        run = load_run(path, base=base)
        assert run.train.deepspeed_config.exists()
        assert run.adapter_name == f"fingpt-{base}"
        assert run.base_model.chat_format.value in ("llama3", "deepseek-r1")


def test_cpu_preset_runs_on_the_installed_deepspeed() -> None:
    run = load_run(CONFIG_DIR / "cpu_tiny.json")
    assert run.model == "tiny" and run.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert run.train.deepspeed_config == DS_ZERO2_ADAMW
    assert deepspeed_optimizer(DS_ZERO2_ADAMW) == ("AdamW", True)
    require_supported_optimizer(DS_ZERO2_ADAMW)


def test_zero2_adamw_is_the_default_and_zero_one_adam_stays_for_multi_gpu_builds() -> None:
    assert RunSettings().train.deepspeed_config == DS_ZERO2_ADAMW
    run = load_run(CONFIG_DIR / "gpu_8b.json", base="deepseek")
    assert run.train.deepspeed_config == DS_ZERO2_ADAMW
    assert run.model_id == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
    name, supported = deepspeed_optimizer(DS_ZERO0_ZEROONE)
    assert name == "ZeroOneAdam"
    if deepspeed.__version__ == "0.19.8":  # this build ships no 1-bit optimizers
        assert not supported
        with pytest.raises(SystemExit, match="ZeroOneAdam"):
            require_supported_optimizer(DS_ZERO0_ZEROONE)


@pytest.mark.parametrize("path", RUN_PRESETS, ids=lambda p: p.name)
def test_no_preset_uses_zero_one_adam(path: Path) -> None:
    run = load_run(path)
    assert deepspeed_optimizer(run.train.deepspeed_config) == ("AdamW", True)
    require_supported_optimizer(run.train.deepspeed_config)


def test_only_the_fingpt_deepspeed_config_names_zero_one_adam() -> None:
    assert [p.name for p in DS_CONFIGS if deepspeed_optimizer(p)[0] == "ZeroOneAdam"] == ["ds_zero0_zeroone.json"]


def test_gpu_preset_is_the_measured_recipe() -> None:
    t = load_run(CONFIG_DIR / "gpu_8b.json").train
    assert t.attn_implementation == "sdpa" and not t.gradient_checkpointing
    assert t.torch_compile and t.packing and t.answer_only_logits and t.bf16 and t.use_deepspeed
    # FinGPT's 16 examples per optimizer step: ~2.65 examples per packed row, 2 rows x 3 accumulation.
    assert (t.micro_batch_size, t.grad_accum) == (2, 3)
    assert (t.learning_rate, t.epochs) == (5e-5, 5.0)


def test_recipe_knobs_default_off() -> None:
    t = RunSettings().train
    assert not (t.packing or t.answer_only_logits or t.torch_compile or t.gradient_checkpointing)
    assert t.attn_implementation is None and t.max_steps is None and t.use_deepspeed


def test_defaults_are_fingpt_lora() -> None:
    lora = LoraSettings()
    assert (lora.r, lora.alpha, lora.dropout) == (8, 16, 0.1)
    assert lora.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    run = RunSettings()
    assert run.model_id == "meta-llama/Llama-3.1-8B-Instruct" and run.data.max_length == 4096


@pytest.mark.parametrize(
    "raw",
    [
        {"lora": {"r": 0}},
        {"lora": {"rank": 8}},
        {"train": {"warmup_ratio": 1.0}},
        {"train": {"max_steps": 0}},
        {"train": {"packing": True, "pack": True}},
        {"train": {"deepspeed_config": "missing.json"}},
        {"data": {"max_length": 100}},
        {"base": "mistral"},
    ],
)
def test_invalid_settings_are_rejected(raw: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        run_from_dict(raw)


def test_settings_round_trip_through_json() -> None:
    run = load_run(CONFIG_DIR / "cpu_tiny.json", base="deepseek")
    assert run_from_dict(json.loads(json.dumps(run.to_dict()))) == run


def test_a_preset_is_found_by_its_shipped_name_or_its_path(tmp_path: Path) -> None:
    from training.config import resolve_preset

    assert resolve_preset("cpu_tiny") == CONFIG_DIR / "cpu_tiny.json"
    assert resolve_preset("cpu_tiny.json") == CONFIG_DIR / "cpu_tiny.json"
    own = tmp_path / "cpu_tiny.json"
    own.write_text("{}")
    assert resolve_preset(own) == own  # a path that exists wins over the shipped name
    assert resolve_preset("no_such_preset") == Path("no_such_preset")  # fails loudly when read
