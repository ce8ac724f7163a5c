"""vLLM's greedy output equals transformers' (+ peft) on the same prompt and adapter.

The adapter is the one the service serves (a real rank-8 LoRA, random init so it changes the
output); the prompt is a rendered forecast prompt of the snapshot; both sides run float32,
tokenize without special tokens (the chat text carries its own BOS marker) and decode 32
tokens greedily. The base model without the adapter is compared too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from forecast.providers.snapshot import SnapshotMarketData
from forecast.templates import render_chat
from forecast.windows import WindowConfig, build_prompt
from service.engine import Chunk, GenerationParams

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(900)]

NEW_TOKENS = 32


async def collect(chunks: AsyncIterator[Chunk]) -> tuple[str, int]:
    text, tokens = "", 0
    async for chunk in chunks:
        text += chunk.delta
        tokens = chunk.tokens
    return text, tokens


def transformers_greedy(model_dir: Path, adapter_dir: Path, prompt: str) -> tuple[str, str]:
    """(with adapter, without adapter) greedy continuations from transformers + peft."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(str(model_dir))
    base: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model: Any = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids

    def greedy() -> str:
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
        return str(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))

    with_adapter = greedy()
    with model.disable_adapter():
        without = greedy()
    return with_adapter, without


async def test_vllm_greedy_equals_transformers_with_the_same_adapter(
    app: Any, engines: Any, tiny_model: Path
) -> None:
    engine = engines["deepseek"]
    built = build_prompt(
        SnapshotMarketData(), "KO", dt.date(2023, 12, 31),
        WindowConfig(weeks=1, news_per_week=1, with_financials=False),
    )
    prompt = render_chat(built.prompt, engine.info.chat_format)
    params = GenerationParams(max_tokens=NEW_TOKENS, temperature=0.0)
    async with app.state.service.registry.acquire("fingpt-deepseek") as adapter:
        vllm_lora, n_lora = await collect(engine.generate(prompt, params, adapter.lora, "eq-lora"))
        vllm_base, _ = await collect(engine.generate(prompt, params, None, "eq-base"))
        adapter_dir = adapter.lora.path
    hf_lora, hf_base = await anyio.to_thread.run_sync(transformers_greedy, tiny_model, adapter_dir, prompt)
    assert n_lora > 0
    assert vllm_lora == hf_lora
    assert vllm_base == hf_base
    assert hf_lora != hf_base  # the adapter really changes the answer
