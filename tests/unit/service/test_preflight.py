"""Start-up checks: GPU memory shares fit the card; the longest prompt fits the context."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from forecast.basemodels import TINY_MODEL_DIR, materialize_tiny_model
from forecast.templates import ChatFormat
from forecast.windows import WindowConfig
from service import main as main_module
from service.preflight import (
    PreflightError,
    Tokenizer,
    check_gpu_shares,
    longest_prompt_tokens,
    preflight,
)
from service.settings import EngineSettings, ServiceSettings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


@pytest.fixture(scope="module")
def tiny_tokenizer() -> Tokenizer:
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(str(materialize_tiny_model(TINY_MODEL_DIR)))
    return tokenizer  # type: ignore[no-any-return]


def settings(engines: list[dict[str, Any]] | None = None, **fields: Any) -> ServiceSettings:
    if engines is not None:
        fields["engines"] = engines
    return ServiceSettings(_env_file=None, **fields)  # type: ignore[call-arg]


def two(**engine: Any) -> list[EngineSettings]:
    return [EngineSettings(base="llama", **engine), EngineSettings(base="deepseek", **engine)]


# --- GPU memory shares --------------------------------------------------------------------


def test_two_gpu_engines_over_the_card_are_refused() -> None:
    with pytest.raises(PreflightError, match=r"adds up to 1\.2 \(llama 0\.6 \+ deepseek 0\.6\)"):
        check_gpu_shares(two(gpu_memory_utilization=0.6), gpu=True, gpus=1)


def test_two_gpu_engines_at_045_each_pass() -> None:
    check_gpu_shares(two(gpu_memory_utilization=0.45), gpu=True, gpus=1)


def test_shares_leave_headroom_for_the_cuda_contexts() -> None:
    with pytest.raises(PreflightError, match="CUDA context"):
        check_gpu_shares(two(gpu_memory_utilization=0.5), gpu=True, gpus=1)


def test_two_gpu_engines_without_a_share_are_refused() -> None:
    engines = [EngineSettings(base="llama", gpu_memory_utilization=0.45), EngineSettings(base="deepseek")]
    with pytest.raises(PreflightError, match=r"'deepseek' set no gpu_memory_utilization.*0\.45 each"):
        check_gpu_shares(engines, gpu=True, gpus=1)


def test_one_gpu_engine_may_keep_vllms_default_share_but_not_the_whole_card() -> None:
    check_gpu_shares([EngineSettings(base="llama")], gpu=True, gpus=1)
    check_gpu_shares([EngineSettings(base="llama", gpu_memory_utilization=0.98)], gpu=True, gpus=1)
    with pytest.raises(PreflightError, match=r"at most 0\.98"):
        check_gpu_shares([EngineSettings(base="llama", gpu_memory_utilization=0.99)], gpu=True, gpus=1)


def test_tensor_parallel_beyond_the_gpus_is_refused() -> None:
    with pytest.raises(PreflightError, match="tensor_parallel_size=2 but this machine has 1 GPU"):
        check_gpu_shares([EngineSettings(base="llama", tensor_parallel_size=2)], gpu=True, gpus=1)


def test_cpu_ignores_the_shares() -> None:
    check_gpu_shares(two(gpu_memory_utilization=0.6), gpu=False, gpus=0)
    check_gpu_shares(two(), gpu=False, gpus=0)


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("Dockerfile.gpu", r"FORECAST_SERVICE_ENGINES='(.*)'"),
        ("env.example", r"^# FORECAST_SERVICE_ENGINES=(.*)$"),
    ],
)
def test_shipped_gpu_engines_parse_and_fit_one_gpu(
    name: str, pattern: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = re.search(pattern, (DEPLOY / name).read_text(), re.MULTILINE)
    assert found is not None
    monkeypatch.setenv("FORECAST_SERVICE_ENGINES", found[1])
    engines = settings().engines
    assert [e.base for e in engines] == ["llama", "deepseek"]
    check_gpu_shares(engines, gpu=True, gpus=1)


# --- the longest prompt -------------------------------------------------------------------


def test_the_default_tiny_configuration_passes(tiny_tokenizer: Tokenizer) -> None:
    preflight(settings(), gpu=False, gpus=0, tokenizer_for=lambda _: tiny_tokenizer)


def test_an_oversized_configuration_is_refused_with_what_to_change(tiny_tokenizer: Tokenizer) -> None:
    oversized = settings([{"base": "llama", "max_model_len": 1024}], weeks=4, news_per_week=5)
    with pytest.raises(PreflightError) as refused:
        preflight(oversized, gpu=False, gpus=0, tokenizer_for=lambda _: tiny_tokenizer)
    message = str(refused.value)
    assert message.startswith("engine 'llama': the longest prompt these settings build")
    assert "weeks=4 × news_per_week=5" in message and "max_new_tokens=1536" in message
    assert "> max_model_len=1024" in message
    assert "Raise max_model_len" in message and "FORECAST_SERVICE_NEWS_PER_WEEK" in message


def test_longest_prompt_grows_with_the_window_and_counts_real_tokens(
    tiny_tokenizer: Tokenizer,
) -> None:
    small = longest_prompt_tokens(WindowConfig(weeks=1, news_per_week=1), ChatFormat.LLAMA3, tiny_tokenizer)
    default = longest_prompt_tokens(WindowConfig(), ChatFormat.DEEPSEEK_R1, tiny_tokenizer)
    assert 300 < small < default < 8192 - 512  # the default 4 × 5 window: ~6k tokens


# --- python -m service --------------------------------------------------------------------


def test_main_exits_with_the_message_instead_of_starting(monkeypatch: pytest.MonkeyPatch) -> None:
    engines = [{"base": b, "gpu_memory_utilization": 0.6} for b in ("llama", "deepseek")]
    monkeypatch.setenv("FORECAST_SERVICE_ENGINES", json.dumps(engines))
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "auto")  # main sets a default: keep it scoped
    monkeypatch.setattr(main_module, "prepare_settings", lambda s, data, demo: s)
    monkeypatch.setattr(main_module, "on_gpu", lambda: True)
    monkeypatch.setattr(main_module, "gpu_count", lambda: 1)

    def no_serving(*_: object) -> None:
        raise AssertionError("an engine was started")

    monkeypatch.setattr(main_module, "serve", no_serving)
    with pytest.raises(SystemExit) as exited:
        main_module.main([])
    assert isinstance(exited.value.code, str)  # printed on stderr, exit status 1
    assert exited.value.code.startswith("python -m service: refusing to start: ")
    assert "gpu_memory_utilization" in exited.value.code
