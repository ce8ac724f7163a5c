"""Checkpoint evaluation through vLLM against the transformers path, on the real tiny model.

Both backends run the code evaluation runs (``VLLMCheckpoints`` and ``TransformersCheckpoints``)
on held-back prompts of the CPU preset. With the answer grammar off, they give the same greedy
text for an untrained adapter (lora_B = 0, what a fine-tune starts from) and for a small random
one (so the LoRA path itself is compared): both compute in float32 on this CPU (vLLM's ``auto``
dtype picks bfloat16 only with native bf16), as the service's greedy-equality test does.
With the grammar on (bounds fitted to the token budget), every answer is a whole FinGPT answer,
read by its own Prediction line. After the block the engine-core
process is gone (a fine-tune or the next search trial gets the memory back).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from forecast.answer_format import LIMITS, answer_regex
from forecast.templates import ChatFormat
from training.config import CONFIG_DIR, EvalSettings, load_run
from training.data import fit_prompt, prepare_split
from training.generate import TransformersCheckpoints
from training.vllm_generate import PROBE_ROOM, vllm_checkpoints

pytestmark = pytest.mark.timeout(1200)

FMT = ChatFormat.LLAMA3
NEW_TOKENS = 32
# float32 on every CPU: the transformers cross-check computes in float32, and "auto" would
# pick bfloat16 on a CPU with native bf16 (avx512_bf16), where greedy text may differ.
FREE = EvalSettings(
    max_new_tokens=NEW_TOKENS, force_prediction=False, answer_grammar=False, dtype="float32"
)
GRAMMAR = EvalSettings(max_new_tokens=192, force_prediction=True, answer_grammar=True)


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


@pytest.fixture(scope="module")
def prompts(tokenizer: Any) -> list[list[int]]:
    """Three held-back prompts of the CPU preset, fitted as evaluation fits them."""
    run = load_run(CONFIG_DIR / "cpu_tiny.json", base="llama")
    split = prepare_split(run.data, tokenizer, FMT)
    budget = run.data.max_length - run.eval.max_new_tokens - 32
    fitted = [fit_prompt(e.prompt, tokenizer, FMT, budget) for e in split.held.examples[:3]]
    return [f[0] for f in fitted if f is not None]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    out = {}
    for name, init in (("untrained", True), ("random", False)):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
        cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, init_lora_weights=init,
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, cfg)
        if not init:
            with torch.no_grad():  # small: the adapter perturbs the model, it does not wreck it
                for n, p in peft_model.named_parameters():
                    if "lora_" in n:
                        p.mul_(0.3)
        peft_model.save_pretrained(str(root / name))
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def vllm_results(
    tiny_model: Path, tokenizer: Any, prompts: list[list[int]], adapters: dict[str, Path]
) -> dict[str, Any]:
    """Everything the vLLM side has to say, from one engine (started once, shut down after)."""
    longest = max(map(len, prompts)) + GRAMMAR.max_new_tokens + PROBE_ROOM
    with vllm_checkpoints(
        str(tiny_model), tokenizer, FMT, FREE, lora_rank=8, max_model_len=longest
    ) as engine:
        free = {name: engine.generate_and_read(path, prompts)[0] for name, path in adapters.items()}
        grammar = engine.with_settings(GRAMMAR).generate_and_read(adapters["untrained"], prompts)
        dtype = engine.llm.llm_engine.model_config.dtype
        cores = list(engine.llm.llm_engine.engine_core.resources.engine_manager.processes)
    return {"free": free, "grammar": grammar, "dtype": dtype, "cores": cores}


def test_vllm_and_transformers_give_the_same_greedy_text(
    vllm_results: dict[str, Any], tiny_model: Path, tokenizer: Any, prompts: list[list[int]],
    adapters: dict[str, Path],
) -> None:
    import torch

    assert vllm_results["dtype"] == torch.float32
    hf = TransformersCheckpoints(str(tiny_model), tokenizer, FMT, NEW_TOKENS, force_prediction=False)
    for name, path in adapters.items():
        texts, _ = hf.generate_and_read(path, prompts)
        assert all(t.strip() for t in texts)
        assert vllm_results["free"][name] == texts, name
    assert vllm_results["free"]["random"] != vllm_results["free"]["untrained"]  # LoRA applied


def test_answers_under_the_grammar_are_whole_and_read_by_their_line(vllm_results: dict[str, Any]) -> None:
    """The bounds fitted to the budget leave room for the whole answer: no probe needed."""
    import re

    texts, answers = vllm_results["grammar"]
    shape = re.compile(answer_regex(FMT, LIMITS.fitting(GRAMMAR.max_new_tokens, FMT)))
    for text, answer in zip(texts, answers, strict=True):
        assert shape.fullmatch(text), text
        assert answer.how == "parsed" and answer.probe is None


def test_the_engine_core_is_gone_after_evaluation(vllm_results: dict[str, Any]) -> None:
    assert vllm_results["cores"] and not any(p.is_alive() for p in vllm_results["cores"])
