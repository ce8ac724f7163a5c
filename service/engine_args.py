"""Engine settings → vLLM's ``AsyncEngineArgs`` for this platform (GPU or CPU), and the
platform facts that choice needs (:class:`service.engine.VLLMEngine` starts from them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service import mask_fill
from service.settings import EngineSettings


def on_gpu() -> bool:
    """Whether vLLM will run on a CUDA GPU here (torch imported only when asked)."""
    import torch

    return bool(torch.cuda.is_available())


def gpu_count() -> int:
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def cpu_supports_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        return "avx512_bf16" in cpuinfo.read_text()
    except OSError:
        return False


def resolve_dtype(setting: str, gpu: bool = False) -> str:
    """auto: bfloat16 on a GPU; on CPU only with native bf16 dot products (AVX2 bf16 gave
    wrong text), else float32."""
    if setting != "auto":
        return setting
    return "bfloat16" if gpu or cpu_supports_bf16() else "float32"


FOLD_WORKER_EXTENSION = "service.fold_worker.FoldWorkerExtension"

# Passed to vLLM on a GPU always; on CPU only when set explicitly (CPU defaults unchanged).
_PASSTHROUGH = (
    "load_format", "tokenizer", "quantization", "kv_cache_dtype", "tensor_parallel_size",
    "max_num_batched_tokens",
)


def engine_kwargs(settings: EngineSettings, gpu: bool) -> dict[str, Any]:
    """The keyword arguments of vLLM's ``AsyncEngineArgs`` for ``settings`` on this platform.

    KV-cache size: on CPU ``kv_cache_gib`` (vLLM needs an explicit size there); on a GPU
    ``gpu_memory_utilization`` sizes it unless ``kv_cache_gib`` was set explicitly."""
    explicit = settings.model_fields_set
    kwargs: dict[str, Any] = {
        "model": settings.model,
        "dtype": resolve_dtype(settings.dtype, gpu),
        "enforce_eager": not gpu if settings.enforce_eager is None else settings.enforce_eager,
        "enable_lora": True,
        "max_loras": settings.max_loras,
        "max_cpu_loras": max(settings.max_cpu_loras, settings.max_loras),
        "max_lora_rank": settings.max_lora_rank,
        "max_model_len": settings.max_model_len,
        "max_num_seqs": settings.max_num_seqs,
        "seed": settings.seed,
        # vLLM's default loggers off (no periodic log lines); the ones passed to the engine
        # (scheduler stats, vLLM's Prometheus metrics on the engine's registry) still record.
        "disable_log_stats": True,
        # collective_rpc methods that fold a promoted adapter into the weights (service.fold)
        "worker_extension_cls": FOLD_WORKER_EXTENSION,
    }
    if settings.kv_cache_gib is not None and (not gpu or "kv_cache_gib" in explicit):
        kwargs["kv_cache_memory_bytes"] = settings.kv_cache_gib << 30
    if gpu and settings.gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
    for name in _PASSTHROUGH:
        if gpu or name in explicit:
            kwargs[name] = getattr(settings, name)
    if settings.structured_output_backend != "auto":
        kwargs["structured_outputs_config"] = {"backend": settings.structured_output_backend}
    threads = mask_fill.resolve_threads(settings.mask_fill_threads)
    if threads >= 2:  # vLLM's scheduler, its answer-expression masks filled in parallel
        kwargs["scheduler_cls"] = mask_fill.QUALNAME
        kwargs["additional_config"] = {mask_fill.CONFIG_KEY: threads}
    return kwargs


def resolve_model_id(settings: EngineSettings) -> str:
    if settings.model_id:
        return settings.model_id
    config = Path(settings.model) / "config.json"
    if config.is_file():
        name = json.loads(config.read_text()).get("_name_or_path")
        if isinstance(name, str) and name:
            return name
    return settings.model
