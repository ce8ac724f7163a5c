"""Fixtures of the reliability tests on the real vLLM CPU engine (tiny model): one engine
spec and real peft adapters. Each test starts the engines it kills, so nothing is shared
with tests/integration/service."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.settings import EngineSettings
from service.testing import write_peft_adapter


@pytest.fixture(scope="session")
def engine_spec(tiny_model: Path) -> EngineSettings:
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return EngineSettings(
        base="llama", model=str(tiny_model), dtype="float32", enforce_eager=True,
        max_model_len=2048, kv_cache_gib=1, max_num_seqs=8, max_loras=2, max_lora_rank=8,
    )


@pytest.fixture(scope="session")
def adapter_root(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    root = tmp_path_factory.mktemp("adapters")
    write_peft_adapter(tiny_model, root, "fingpt-llama", "v1", "llama", seed=1)
    return root
