"""The engine seam: an ``EngineClient`` Protocol and its vLLM implementation.

The service talks to a base model only through :class:`EngineClient`: generate text (as an
async stream of chunks) with an optional LoRA adapter, add and remove adapters, report
scheduler stats and health. :class:`VLLMEngine` wraps vLLM's in-process ``AsyncLLM`` (the
engine core runs in its own process; no HTTP hop); ``service.testing.FakeEngine`` honours
the same Protocol for fast unit tests.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from forecast.answer_format import compile_room
from forecast.templates import ChatFormat
from service.engine_args import engine_kwargs, on_gpu, resolve_model_id
from service.engine_metrics import prometheus_logger_class
from service.settings import EngineSettings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from vllm.v1.engine.async_llm import AsyncLLM

log = logging.getLogger(__name__)


class EngineError(Exception):
    """Generation failed inside the engine (the service answers 503)."""


class EngineDead(EngineError):
    """The engine process is gone; readiness turns red."""


class EngineRestarting(EngineDead):
    """The engine died and its replacement is starting (the service answers 503 with
    ``Retry-After``)."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PromptRejected(EngineError):
    """The engine refused the request itself (e.g. prompt longer than the context)."""


class LoraLoadError(Exception):
    """The engine could not load an adapter; nothing was registered."""


class FoldFailed(Exception):
    """Folding an adapter into the weights failed; the engine restored its previous fold."""


@dataclass(frozen=True)
class EngineInfo:
    base: str  # "llama" | "deepseek"
    model_id: str  # what adapter manifests must name as base_model
    chat_format: ChatFormat
    max_lora_rank: int
    max_loras: int
    # Decodes under a regular expression (GenerationParams.regex); without it the service
    # reads free text and probes a cut-off answer for its bin.
    structured_output: bool = False
    # Context length and tokenizer (dir or HF id) the engine runs with; None: unknown here
    # (a test double), and the settings' own engine entry is used instead.
    max_model_len: int | None = None
    tokenizer: str | None = None


def structured_output_available(backend: str = "auto") -> bool:
    """Whether this vLLM build has the library behind ``backend`` for regex-constrained
    decoding (xgrammar; llguidance for vLLM's ``guidance``; auto: either)."""
    import importlib.util

    modules = {"xgrammar": ("xgrammar",), "guidance": ("llguidance",)}.get(backend, ("xgrammar", "llguidance"))
    return any(importlib.util.find_spec(m) is not None for m in modules)


@dataclass(frozen=True)
class LoraRef:
    name: str  # "name@version", unique per engine
    lora_id: int  # monotonic, never reused
    path: Path


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()  # when set: the output is exactly one of these (constrained)
    regex: str | None = None  # when set: the whole output matches it (constrained)


@dataclass(frozen=True)
class Chunk:
    """New text since the previous chunk; ``tokens`` counts generated tokens so far."""

    delta: str
    tokens: int
    finished: bool
    finish_reason: str | None = None
    queue_s: float | None = None  # engine-measured wait before first scheduling


@dataclass(frozen=True)
class EngineStats:
    kv_cache_usage: float | None = None  # 0..1
    running: int | None = None
    waiting: int | None = None
    start_seconds: float | None = None  # how long the engine took to start


class EngineClient(Protocol):
    @property
    def info(self) -> EngineInfo: ...

    def generate(
        self, prompt: str, params: GenerationParams, lora: LoraRef | None, request_id: str
    ) -> AsyncIterator[Chunk]: ...

    async def add_lora(self, lora: LoraRef) -> None: ...

    async def remove_lora(self, lora_id: int) -> None: ...

    async def list_loras(self) -> set[int]: ...

    async def prepare_fold(self, path: Path) -> None:
        """Check that the adapter at ``path`` folds into the weights; keep host copies of the
        weights it touches. Serving goes on meanwhile. Raises :class:`FoldFailed`."""
        ...

    async def fold(self, path: Path | None) -> None:
        """Make the weights the pristine ones plus the adapter at ``path`` (None: pristine).
        Called only with no request in flight; on failure the previous fold is restored and
        :class:`FoldFailed` raised."""
        ...

    async def weights_checksum(self) -> str:
        """A digest of the base weights as they are now (exact-restoration checks)."""
        ...

    def stats(self) -> EngineStats: ...

    async def health(self) -> None:
        """Raise :class:`EngineDead` when the engine cannot serve."""
        ...

    async def aclose(self) -> None: ...


# Folding copies and adds whole weight matrices: minutes are a hung engine, not a slow one.
FOLD_RPC_TIMEOUT_S = 300.0


class _StatsBox:
    """Latest scheduler stats, written by vLLM's output loop, read by the scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = EngineStats()

    def update(self, kv: float, running: int, waiting: int) -> None:
        with self._lock:
            self.value = EngineStats(kv_cache_usage=kv, running=running, waiting=waiting)


def _stat_logger_class(box: _StatsBox) -> Any:
    """A vLLM per-engine stat logger that copies scheduler stats into ``box``."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class SchedulerStatsSink(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is not None:
                box.update(
                    float(scheduler_stats.kv_cache_usage),
                    int(scheduler_stats.num_running_reqs),
                    int(scheduler_stats.num_waiting_reqs),
                )

        def log_engine_initialized(self) -> None:
            pass

    return SchedulerStatsSink


class VLLMEngine:
    """vLLM's ``AsyncLLM`` with LoRA enabled, for one base model."""

    def __init__(
        self,
        llm: AsyncLLM,
        info: EngineInfo,
        box: _StatsBox,
        start_seconds: float | None = None,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        self._llm = llm
        self._info = info
        self._box = box
        self.start_seconds = start_seconds
        self._metrics_registry = metrics_registry

    @property
    def metrics_registry(self) -> CollectorRegistry | None:
        """vLLM's own ``vllm:*`` metrics of this engine (:mod:`service.engine_metrics`)."""
        return self._metrics_registry

    @classmethod
    def start(cls, settings: EngineSettings, gpu: bool | None = None) -> VLLMEngine:
        """Start the engine (blocks ~30 s on CPU in eager mode). Call it inside the event loop
        that will use it, or in a worker thread (no running loop there): vLLM then starts its
        output loop on the first call made from the serving loop. ``gpu``: None detects it."""
        from prometheus_client import CollectorRegistry
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from service import lifeline

        lifeline.install()  # the engine core dies with this process, even on SIGKILL
        compile_room(os.environ)  # read in this process and the engine core's
        box = _StatsBox()
        kwargs = engine_kwargs(settings, on_gpu() if gpu is None else gpu)
        if "structured_outputs_config" in kwargs:
            from vllm.config import StructuredOutputsConfig

            kwargs["structured_outputs_config"] = StructuredOutputsConfig(**kwargs["structured_outputs_config"])
        args = AsyncEngineArgs(**kwargs)
        registry = CollectorRegistry(auto_describe=False)
        loggers = [_stat_logger_class(box)]
        prometheus = prometheus_logger_class(registry)
        if prometheus is not None:
            loggers.append(prometheus)
        started = time.perf_counter()
        llm = AsyncLLM.from_engine_args(args, stat_loggers=loggers)
        seconds = time.perf_counter() - started
        info = EngineInfo(
            base=settings.base,
            model_id=resolve_model_id(settings),
            chat_format=settings.format,
            max_lora_rank=settings.max_lora_rank,
            max_loras=settings.max_loras,
            structured_output=structured_output_available(settings.structured_output_backend),
            max_model_len=settings.max_model_len,
            tokenizer=settings.tokenizer or settings.model,
        )
        log.info(
            "engine %s started on %s (%s) in %.1f s", settings.base, settings.model, args.dtype,
            seconds,
        )
        return cls(llm, info, box, seconds, registry if prometheus is not None else None)

    @property
    def info(self) -> EngineInfo:
        return self._info

    async def generate(
        self, prompt: str, params: GenerationParams, lora: LoraRef | None, request_id: str
    ) -> AsyncIterator[Chunk]:
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams
        from vllm.v1.engine.exceptions import EngineDeadError

        sampling = SamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            stop=list(params.stop),
            output_kind=RequestOutputKind.DELTA,
            structured_outputs=(
                StructuredOutputsParams(choice=list(params.choices)) if params.choices
                else StructuredOutputsParams(regex=params.regex) if params.regex is not None
                else None
            ),
        )
        lora_request = (
            LoRARequest(lora.name, lora.lora_id, str(lora.path)) if lora is not None else None
        )
        tokens = 0
        try:
            # The rendered chat text carries its own BOS marker: no special tokens added.
            stream = self._llm.generate(
                {"prompt": prompt},
                sampling,
                request_id,
                lora_request=lora_request,
                tokenization_kwargs={"add_special_tokens": False},
            )
            async for out in stream:
                completion = out.outputs[0]
                tokens += len(completion.token_ids)
                yield Chunk(
                    delta=completion.text,
                    tokens=tokens,
                    finished=out.finished,
                    finish_reason=completion.finish_reason,
                    queue_s=_queue_seconds(out.metrics),
                )
        except EngineDeadError as exc:
            raise EngineDead(f"engine {self._info.base} is dead") from exc
        except _client_errors() as exc:
            raise PromptRejected(str(exc)) from exc
        except Exception as exc:
            if isinstance(exc, GeneratorExit):
                raise
            raise EngineError(f"generation failed: {type(exc).__name__}") from exc

    async def add_lora(self, lora: LoraRef) -> None:
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            ok = await self._llm.add_lora(LoRARequest(lora.name, lora.lora_id, str(lora.path)))
        except EngineDeadError as exc:
            raise EngineDead(f"engine {self._info.base} is dead") from exc
        except Exception as exc:  # vLLM wraps worker errors in a bare Exception
            raise LoraLoadError(_first_line(str(exc))) from exc
        if not ok:
            raise LoraLoadError(f"engine refused adapter {lora.name}")

    async def remove_lora(self, lora_id: int) -> None:
        await self._llm.remove_lora(lora_id)

    async def list_loras(self) -> set[int]:
        return set(await self._llm.list_loras())

    async def _rpc(self, method: str, *args: Any) -> Any:
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            results = await self._llm.collective_rpc(method, timeout=FOLD_RPC_TIMEOUT_S, args=args)
        except EngineDeadError as exc:
            raise EngineDead(f"engine {self._info.base} is dead") from exc
        except Exception as exc:  # vLLM re-raises worker errors as a bare Exception
            raise FoldFailed(_first_line(str(exc)) or type(exc).__name__) from exc
        return results[0]  # tensor parallelism 1: one worker

    async def prepare_fold(self, path: Path) -> None:
        await self._rpc("forecast_prepare_fold", str(path))

    async def fold(self, path: Path | None) -> None:
        previous = await self._rpc("forecast_fold", None if path is None else str(path))
        # Cached KV blocks of requests with no LoRA were computed with the old weights, and the
        # folded version's requests carry no LoRA: they must not be reused.
        if await self._llm.reset_prefix_cache() is False:  # None (older vLLM): done
            await self._rpc("forecast_fold", previous)
            raise FoldFailed("the prefix cache could not be cleared; previous fold restored")

    async def weights_checksum(self) -> str:
        return str(await self._rpc("forecast_weights_checksum"))

    def stats(self) -> EngineStats:
        return replace(self._box.value, start_seconds=self.start_seconds)

    async def reset_prefix_cache(self) -> None:
        """Forget cached prompt prefixes, so that benchmark runs on the same prompts start
        equal (not part of the Protocol: the service never needs it)."""
        await self._llm.reset_prefix_cache()

    def core_pids(self) -> list[int]:
        """PIDs of the engine-core processes (fault-injection tests kill them)."""
        resources = getattr(self._llm.engine_core, "resources", None)
        manager = getattr(resources, "engine_manager", None)
        return [int(p.pid) for p in getattr(manager, "processes", []) if p.pid is not None]

    async def health(self) -> None:
        if self._llm.errored or not self._llm.is_running:
            raise EngineDead(f"engine {self._info.base} is not running")
        try:
            await self._llm.check_health()
        except Exception as exc:
            raise EngineDead(f"engine {self._info.base}: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Stop the engine-core process now. vLLM's ``__del__`` calls ``shutdown`` again at
        interpreter exit, when module globals are gone, and fails noisily: make that a no-op."""
        self._llm.shutdown()
        setattr(self._llm, "shutdown", _already_shut_down)  # noqa: B010


def _client_errors() -> tuple[type[Exception], ...]:
    """What vLLM raises for a request it refuses (prompt too long, bad parameters): a
    ``VLLMClientError`` in recent releases; a plain ``ValueError`` in 0.20-0.2x, the line that
    pins the GPU image's torch 2.11."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return (ValueError,)
    return (VLLMClientError,)


def _already_shut_down(timeout: float | None = None) -> None:
    return None


def _queue_seconds(metrics: Any) -> float | None:
    queued = getattr(metrics, "queued_ts", 0.0)
    scheduled = getattr(metrics, "scheduled_ts", 0.0)
    if not queued or not scheduled:
        return None
    return max(0.0, float(scheduled) - float(queued))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:500] if text.strip() else "unknown error"
