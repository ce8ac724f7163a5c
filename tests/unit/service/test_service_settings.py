"""Service settings come from FORECAST_SERVICE_* (JSON for lists/maps); the token is masked."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import ServiceSettings


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORECAST_SERVICE_ADMIN_TOKEN", "s3cret")
    monkeypatch.setenv("FORECAST_SERVICE_PORT", "9001")
    monkeypatch.setenv("FORECAST_SERVICE_ROUTING", '{"a": 0.25, "b": 0.75}')
    monkeypatch.setenv("FORECAST_SERVICE_ENGINES", '[{"base": "deepseek", "dtype": "float32"}]')
    s = ServiceSettings()
    assert s.port == 9001 and s.routing == {"a": 0.25, "b": 0.75}
    assert [e.base for e in s.engines] == ["deepseek"] and str(s.engines[0].format) == "deepseek-r1"
    assert s.admin_token_value() == "s3cret"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.model_dump())


def test_defaults_run_the_tiny_model_for_both_bases(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("ADMIN_TOKEN", "ENGINES", "PORT", "ROUTING"):
        monkeypatch.delenv(f"FORECAST_SERVICE_{key}", raising=False)
    s = ServiceSettings()
    assert s.admin_token_value() is None  # admin routes disabled, not open
    assert [(e.base, e.model) for e in s.engines] == [
        ("llama", "var/models/smollm2-135m-instruct"),
        ("deepseek", "var/models/smollm2-135m-instruct"),
    ]
    assert s.db_url.startswith("sqlite:///")


def test_unknown_base_is_refused() -> None:
    with pytest.raises(ValidationError):
        ServiceSettings(engines=[{"base": "mistral"}])  # type: ignore[list-item]


def test_gpu_engine_settings_parse_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "FORECAST_SERVICE_ENGINES",
        '[{"base": "llama", "model": "meta-llama/Llama-3.1-8B-Instruct", '
        '"gpu_memory_utilization": 0.45, "load_format": "dummy", "tokenizer": "/models/llama", '
        '"quantization": "fp8", "kv_cache_dtype": "fp8", "tensor_parallel_size": 2, '
        '"max_num_batched_tokens": 8192, "enforce_eager": false, "dtype": "float16"}]',
    )
    (e,) = ServiceSettings().engines
    assert (e.gpu_memory_utilization, e.load_format, e.tokenizer) == (0.45, "dummy", "/models/llama")
    assert (e.quantization, e.kv_cache_dtype, e.tensor_parallel_size) == ("fp8", "fp8", 2)
    assert (e.max_num_batched_tokens, e.enforce_eager, e.dtype) == (8192, False, "float16")
    assert e.kv_cache_gib == 2 and "kv_cache_gib" not in e.model_fields_set  # GPU: not passed
