"""Checkpoint generation through vLLM's offline ``LLM``: one engine per run, a LoRA per checkpoint.

The engine starts once (:func:`vllm_checkpoints`) for all the checkpoints of a run; each
checkpoint is served as a ``LoRARequest`` with its own id next to the base weights, instead of a
merged model loaded per checkpoint (the transformers path, ~11x slower on the same prompts).
Answers are greedy and, with ``EvalSettings.answer_grammar`` on, decoded under the FinGPT answer
expression (:func:`forecast.answer_format.answer_regex`, vLLM structured output) with bounds
fitted to ``max_new_tokens``, so every answer is whole and names one of the twelve bins on its
``Prediction:`` line. A free-text answer cut off by ``max_new_tokens`` before that line (or one
with a budget below ``min_answer_tokens``) gets the probe: the header appended to its own text, then
one choice constrained to the twelve bin phrases (greedy over the phrases' tokens, as the
service's probe; the transformers path scores each whole phrase instead).

Training never imports ``service``: the engine settings below follow what
``service.engine.engine_kwargs`` does on each platform (float32 on a CPU without native bf16,
eager mode on CPU, an explicit KV-cache size there).
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from forecast.answer import PROBE_MAX_TOKENS, bin_phrases, probe_text
from forecast.answer_format import LIMITS, answer_regex, compile_room
from forecast.templates import SPECS, ChatFormat
from training.config import EvalSettings
from training.generate import ReadAnswer, read_answer

log = logging.getLogger(__name__)

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.lora.MaxLoRARanks
PROBE_ROOM = 64  # tokens past prompt + answer: the re-tokenized probe header and the bin phrase


def on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def cpu_supports_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        return "avx512_bf16" in cpuinfo.read_text()
    except OSError:
        return False


def resolve_dtype(setting: str, gpu: bool) -> str:
    """auto: bfloat16 on a GPU; on CPU only with native bf16 dot products (the service found
    AVX2 bf16 gave wrong text), else float32 (what the transformers path computes in)."""
    if setting != "auto":
        return setting
    return "bfloat16" if gpu or cpu_supports_bf16() else "float32"


def lora_rank_bound(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds a rank-``rank`` adapter."""
    for bound in VLLM_LORA_RANKS:
        if bound >= rank:
            return bound
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")


def llm_kwargs(
    model_path: str, settings: EvalSettings, lora_rank: int, max_model_len: int, gpu: bool,
) -> dict[str, Any]:
    """The keyword arguments of ``vllm.LLM`` for evaluating one run's checkpoints."""
    kwargs: dict[str, Any] = {
        "model": model_path,
        "dtype": resolve_dtype(settings.dtype, gpu),
        # compiled mode starts in minutes on CPU
        "enforce_eager": not gpu if settings.enforce_eager is None else settings.enforce_eager,
        "enable_lora": True,
        "max_loras": 1,  # one checkpoint at a time
        "max_cpu_loras": 2,
        "max_lora_rank": lora_rank_bound(lora_rank),
        "max_model_len": max_model_len,
        "seed": 0,
    }
    if not gpu:
        kwargs["kv_cache_memory_bytes"] = settings.kv_cache_gib << 30
    if settings.structured_output_backend != "auto":
        kwargs["structured_outputs_config"] = {"backend": settings.structured_output_backend}
    return kwargs


class VLLMCheckpoints:
    """Greedy answers of one run's checkpoints from one started ``vllm.LLM``."""

    def __init__(
        self, llm: Any, tokenizer: Any, fmt: ChatFormat, settings: EvalSettings,
        start_seconds: float = 0.0,
    ) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        self.llm = llm
        self._tokenizer = tokenizer
        self._fmt = fmt
        self._settings = settings
        self._eos = SPECS[fmt].eos
        self._lora_ids = itertools.count(1)  # LoRA ids are never reused within the engine
        self.start_seconds = start_seconds
        # Bounds fitted to the budget: every answer is whole (forecast.answer_format).
        fitted = LIMITS.fitting(settings.max_new_tokens, fmt)
        grammar = StructuredOutputsParams(regex=answer_regex(fmt, fitted)) if settings.answer_grammar else None
        self._answer = SamplingParams(
            temperature=0.0, max_tokens=settings.max_new_tokens, stop=[self._eos],
            structured_outputs=grammar,
        )
        self._probe = SamplingParams(
            temperature=0.0, max_tokens=PROBE_MAX_TOKENS,
            structured_outputs=StructuredOutputsParams(choice=bin_phrases()),
        )

    def with_settings(self, settings: EvalSettings) -> VLLMCheckpoints:
        """The same engine (and LoRA id sequence) under other generation settings."""
        other = VLLMCheckpoints(self.llm, self._tokenizer, self._fmt, settings, self.start_seconds)
        other._lora_ids = self._lora_ids
        return other

    def _lora(self, checkpoint: Path) -> Any:
        from vllm.lora.request import LoRARequest

        return LoRARequest(checkpoint.name, next(self._lora_ids), str(checkpoint))

    def generate_and_read(
        self, checkpoint: Path, prompts: Sequence[list[int]],
    ) -> tuple[list[str], list[ReadAnswer]]:
        lora = self._lora(checkpoint)
        texts = [t.split(self._eos, 1)[0] for t in self._generate(prompts, self._answer, lora)]
        probes: list[str | None] = [None] * len(texts)
        if self._settings.force_prediction:
            cut = [i for i, t in enumerate(texts) if read_answer(t).how != "parsed"]
            contexts = [prompts[i] + self._token_ids(probe_text(texts[i])) for i in cut]
            for i, phrase in zip(cut, self._generate(contexts, self._probe, lora), strict=True):
                probes[i] = phrase
        self.llm.llm_engine.remove_lora(lora.lora_int_id)
        return texts, [read_answer(t, p) for t, p in zip(texts, probes, strict=True)]

    def _token_ids(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _generate(self, prompts: Sequence[list[int]], params: Any, lora: Any) -> list[str]:
        if not prompts:
            return []
        outs = self.llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompts], params, lora_request=lora,
            use_tqdm=False,
        )
        return [o.outputs[0].text for o in outs]


@contextmanager
def vllm_checkpoints(
    model_path: str, tokenizer: Any, fmt: ChatFormat, settings: EvalSettings, *, lora_rank: int,
    max_model_len: int, gpu: bool | None = None,
) -> Iterator[VLLMCheckpoints]:
    """One vLLM engine for a run's checkpoints; shut down (engine-core process gone, memory
    released) when the block ends, so a fine-tune or the next trial starts on a quiet machine.

    The engine core is a forked process on CPU; vLLM itself switches to ``spawn`` when this
    process already initialized CUDA (its ``_maybe_force_spawn``), so nothing is forced here.
    Entry points that start it keep their work under ``if __name__ == "__main__"``."""
    from vllm import LLM

    compile_room(os.environ)  # as the service's engine does
    gpu = on_gpu() if gpu is None else gpu
    kwargs = llm_kwargs(model_path, settings, lora_rank, max_model_len, gpu)
    started = time.perf_counter()
    if "structured_outputs_config" in kwargs:
        from vllm.config import StructuredOutputsConfig

        kwargs["structured_outputs_config"] = StructuredOutputsConfig(**kwargs["structured_outputs_config"])
    llm = LLM(**kwargs)
    seconds = time.perf_counter() - started
    log.info("vLLM engine on %s (%s) started in %.1f s", model_path, kwargs["dtype"], seconds)
    engine = VLLMCheckpoints(llm, tokenizer, fmt, settings, seconds)
    try:
        yield engine
    finally:
        engine.llm = None
        shutdown(llm)
        del llm, engine
        gc.collect()


def shutdown(llm: Any) -> None:
    """Stop the engine-core process now (vLLM 0.32's ``LLM`` has no ``shutdown`` of its own;
    its client does) and tear down any distributed state left in this process."""
    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

    llm.llm_engine.engine_core.shutdown()
    cleanup_dist_env_and_memory()
