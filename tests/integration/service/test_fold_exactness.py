"""Folding on the real vLLM CPU engine (tiny model, float32): the promoted version's greedy text
through the folded weights equals its text through its plain LoRA; a non-promoted version's
text through its difference LoRA equals its plain LoRA text, and so does the plain base's
through the negated fold; promote / demote / re-promote cycles give the weights back bit for
bit (checksum through ``collective_rpc``).

The versions are the shipped release adapter (trained) and a random-init rank-8 LoRA; the test
asserts that both change the base model's text, or it would prove nothing. The engine is this
module's own (rank 16 for the difference LoRAs, its own LoRA ids), started once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from support.engines import tiny_engines

from forecast.providers.snapshot import SnapshotMarketData
from forecast.templates import render_chat
from forecast.windows import WindowConfig, build_prompt
from service.adapters import AdapterRegistry
from service.demo_adapters import RELEASE_ROOT
from service.engine import Chunk, EngineClient, GenerationParams, LoraRef
from service.fold import write_difference
from service.telemetry import Telemetry
from service.testing import write_peft_adapter

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(900)]

NAME = "fingpt-llama"
PARAMS = GenerationParams(max_tokens=24, temperature=0.0)


@pytest.fixture(scope="module")
def fold_root(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    root = tmp_path_factory.mktemp("fold-adapters")
    shutil.copytree(RELEASE_ROOT / NAME / "v1", root / NAME / "v1")  # trained
    write_peft_adapter(tiny_model, root, NAME, "v2", "llama", seed=7)  # random init
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(tiny_model: Path) -> AsyncIterator[EngineClient]:
    async with tiny_engines(tiny_model, ["llama"], max_lora_rank=16, max_loras=4, max_num_seqs=8) as started:
        yield started["llama"]


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    market, window = SnapshotMarketData(), WindowConfig(weeks=1, news_per_week=1, with_financials=False)
    from forecast.templates import ChatFormat

    return [render_chat(build_prompt(market, t, dt.date(2023, 12, 31), window).prompt, ChatFormat.LLAMA3)
            for t in ("KO", "AAPL", "JPM")]


async def texts(engine: EngineClient, prompts: list[str], lora: LoraRef | None, tag: str) -> list[str]:
    async def one(i: int, prompt: str) -> str:
        out = ""
        chunk: Chunk
        async for chunk in engine.generate(prompt, PARAMS, lora, f"{tag}-{i}"):
            out += chunk.delta
        return out

    return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))


async def test_folded_and_difference_paths_equal_plain_lora_and_restore_the_weights(
    engine: EngineClient, fold_root: Path, prompts: list[str], tmp_path: Path
) -> None:
    engines = {"llama": engine}
    pristine = await engine.weights_checksum()

    # Folding off: every version through its own LoRA (the reference texts).
    plain = AdapterRegistry(fold_root, engines, Telemetry())
    v1 = await plain.load(NAME, "v1")
    v2 = await plain.load(NAME, "v2", promote=False)
    assert v1.engine_lora == v1.lora and v2.engine_lora == v2.lora
    base = await texts(engine, prompts, None, "base")
    ref = {"v1": await texts(engine, prompts, v1.engine_lora, "v1"),
           "v2": await texts(engine, prompts, v2.engine_lora, "v2")}
    assert ref["v1"] != base and ref["v2"] != base and ref["v1"] != ref["v2"]  # non-trivial adapters
    for a in (v1, v2):
        await engine.remove_lora(a.lora.lora_id)

    # Folding on (LoRA ids far from the first registry's, on the same engine).
    registry = AdapterRegistry(fold_root, engines, Telemetry(), fold_dir=tmp_path / "folded")
    registry._ids = iter(range(100, 10_000))  # type: ignore[assignment]
    try:
        await registry.load(NAME, "v1")
        await registry.load(NAME, "v2", promote=False)
        await registry.settled()  # these texts go to the engine directly, not through acquire()
        served = {a.version: a for a in registry.loaded()}
        assert registry.folded("llama") is served["v1"] and served["v1"].engine_lora is None
        folded_v1 = await engine.weights_checksum()
        assert folded_v1 != pristine
        assert await texts(engine, prompts, None, "f1-v1") == ref["v1"]
        assert await texts(engine, prompts, served["v2"].engine_lora, "f1-v2") == ref["v2"]

        # The plain base, asked for while v1 is folded: the negated fold.
        negated = write_difference(None, served["v1"].lora.path, tmp_path / "negated")
        neg = LoraRef("base-minus-v1", 99, negated)
        await engine.add_lora(neg)
        assert await texts(engine, prompts, neg, "f1-base") == base
        await engine.remove_lora(neg.lora_id)

        await registry.promote(NAME, f"{NAME}@v2")  # v1 retires (no alias) and is unloaded
        await registry.settled()
        await registry.wait_unloaded()
        assert registry.folded("llama") is served["v2"]
        assert await texts(engine, prompts, None, "f2-v2") == ref["v2"]

        await registry.unfold("llama")  # demote
        assert await engine.weights_checksum() == pristine
        assert await texts(engine, prompts, served["v2"].engine_lora, "u-v2") == ref["v2"]

        await registry.load(NAME, "v1")  # re-promote v1: the same folded weights as before
        await registry.settled()
        assert await engine.weights_checksum() == folded_v1
        assert await texts(engine, prompts, None, "r-v1") == ref["v1"]
    finally:
        await engine.fold(None)
    assert await engine.weights_checksum() == pristine
