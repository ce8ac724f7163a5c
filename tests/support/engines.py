"""Real vLLM CPU engines on the tiny model, for integration tests: eager, float32, a 2,048
token context and a 1 GiB KV cache, LoRA rank up to 8."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from service.engine import EngineClient, VLLMEngine
from service.settings import EngineSettings


def tiny_engine_spec(model: Path, base: str, **overrides: Any) -> EngineSettings:
    fields: dict[str, Any] = {
        "base": base, "model": str(model), "dtype": "float32", "enforce_eager": True,
        "max_model_len": 2048, "kv_cache_gib": 1, "max_lora_rank": 8,
    }
    return EngineSettings(**(fields | overrides))


@asynccontextmanager
async def tiny_engines(
    model: Path, bases: Iterable[str], **overrides: Any
) -> AsyncIterator[dict[str, EngineClient]]:
    """One started engine per base (``overrides`` go over :func:`tiny_engine_spec`); every
    one started is closed on exit, also when a later one failed to start."""
    started: dict[str, EngineClient] = {}
    try:
        for base in bases:
            started[base] = VLLMEngine.start(tiny_engine_spec(model, base, **overrides))
        yield started
    finally:
        for engine in started.values():
            await engine.aclose()
