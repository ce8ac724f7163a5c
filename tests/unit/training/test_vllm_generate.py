"""The vLLM evaluation engine's settings, without starting it: dtype and eager mode per platform,
the LoRA rank bound vLLM accepts, and the eval config fields that select backend and grammar."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from training.config import CONFIG_DIR, EvalSettings, load_run
from training.vllm_generate import llm_kwargs, lora_rank_bound, resolve_dtype


@pytest.mark.parametrize(("rank", "bound"), [(1, 1), (4, 8), (8, 8), (9, 16), (16, 16), (300, 320)])
def test_the_lora_rank_is_rounded_up_to_one_vllm_accepts(rank: int, bound: int) -> None:
    assert lora_rank_bound(rank) == bound


def test_a_rank_beyond_vllms_largest_is_refused() -> None:
    with pytest.raises(ValueError, match="max_lora_rank"):
        lora_rank_bound(513)


def test_cpu_engine_is_eager_with_an_explicit_kv_cache(tmp_path: Path) -> None:
    kwargs = llm_kwargs("m", EvalSettings(kv_cache_gib=2), lora_rank=4, max_model_len=1200, gpu=False)
    assert kwargs["enforce_eager"] is True and kwargs["enable_lora"] is True
    assert kwargs["max_lora_rank"] == 8 and kwargs["max_model_len"] == 1200
    assert kwargs["kv_cache_memory_bytes"] == 2 << 30
    gpu = llm_kwargs("m", EvalSettings(), lora_rank=8, max_model_len=1200, gpu=True)
    assert gpu["enforce_eager"] is False and "kv_cache_memory_bytes" not in gpu
    assert gpu["dtype"] == "bfloat16"
    assert "structured_outputs_config" not in gpu  # auto: vLLM's own choice


def test_eval_engine_takes_a_backend_and_eager_mode_from_the_preset() -> None:
    settings = EvalSettings(structured_output_backend="guidance", enforce_eager=True)
    kwargs = llm_kwargs("m", settings, lora_rank=8, max_model_len=1200, gpu=True)
    assert kwargs["structured_outputs_config"] == {"backend": "guidance"}
    assert kwargs["enforce_eager"] is True
    with pytest.raises(ValueError, match="backend"):
        EvalSettings(structured_output_backend="outlines").validate()  # type: ignore[arg-type]


def test_auto_dtype_follows_the_cpus_bf16_support(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_dtype("float16", gpu=False) == "float16"
    assert resolve_dtype("auto", gpu=True) == "bfloat16"
    import training.vllm_generate as vg

    monkeypatch.setattr(vg, "cpu_supports_bf16", lambda: False)
    assert resolve_dtype("auto", gpu=False) == "float32"
    monkeypatch.setattr(vg, "cpu_supports_bf16", lambda: True)
    assert resolve_dtype("auto", gpu=False) == "bfloat16"


def test_eval_defaults_to_vllm_under_the_grammar_and_both_can_be_turned_off(tmp_path: Path) -> None:
    run = load_run(CONFIG_DIR / "cpu_tiny.json", base="llama")
    assert (run.eval.backend, run.eval.answer_grammar) == ("vllm", True)
    preset = tmp_path / "p.json"
    preset.write_text('{"eval": {"backend": "transformers", "answer_grammar": false}}')
    off = load_run(preset).eval
    assert (off.backend, off.answer_grammar) == ("transformers", False)
    with pytest.raises(ValueError, match="backend"):
        dataclasses.replace(run.eval, backend="hf").validate()
