"""Service settings from ``FORECAST_SERVICE_*`` environment variables (pydantic-settings).

Nothing reads the environment at import: the entry point builds ``ServiceSettings()`` and
passes it to :func:`service.app.create_app`. Lists and mappings are given as JSON, e.g.
``FORECAST_SERVICE_ROUTING='{"fingpt-llama": 0.5, "fingpt-deepseek": 0.5}'``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from forecast.basemodels import BASES, TINY_MODEL_DIR, known_base
from forecast.templates import ChatFormat

# Routing rules, shared by the settings (checked at start-up) and service.routing (live).
MAX_ROUTING_WEIGHT = 1e6  # bounded so that sums of weights never overflow
# Labels the forecaster gives explicit-adapter requests ("direct") and shadow copies
# ("shadow"); an arm of either name would be indistinguishable from them in the log and
# the metrics, so they are refused (case-insensitively) as arm names.
DIRECT_ARM, SHADOW_ARM = "direct", "shadow"
RESERVED_ARM_NAMES = frozenset({DIRECT_ARM, SHADOW_ARM})


def routing_problem(weights: Mapping[str, float]) -> str | None:
    """Why these arm weights cannot route, or None: names not reserved, each weight finite
    in [0, MAX_ROUTING_WEIGHT], not all zero."""
    reserved = sorted(name for name in weights if name.lower() in RESERVED_ARM_NAMES)
    if reserved:
        return f"arm names {sorted(RESERVED_ARM_NAMES)} are reserved labels; got {reserved}"
    if not all(math.isfinite(w) and 0 <= w <= MAX_ROUTING_WEIGHT for w in weights.values()):
        return f"weights must be finite numbers in [0, {MAX_ROUTING_WEIGHT:g}]"
    if weights and not any(w > 0 for w in weights.values()):
        return "weights must not all be zero"
    return None


class EngineSettings(BaseModel):
    """One vLLM engine: a base model that serves its own LoRA adapters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: str = Field(description="Key of forecast.basemodels.BASES: 'llama' or 'deepseek'.")
    model: str = Field(default=str(TINY_MODEL_DIR), description="Checkpoint dir or HF id.")
    model_id: str | None = Field(
        default=None,
        description="The id adapters' manifests must name as base_model; default: the "
        "checkpoint's config.json _name_or_path, else `model`.",
    )
    chat_format: ChatFormat | None = None  # default: the base's own format
    # auto: bfloat16 on a GPU; on CPU bfloat16 only with avx512_bf16, else float32.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_loras: int = Field(default=4, ge=1)  # adapters in one batch (old + new during a swap)
    max_cpu_loras: int = Field(default=8, ge=1)
    max_lora_rank: int = Field(default=16, ge=1)
    max_model_len: int = Field(default=8192, ge=256)  # 4-week prompts reach ~6k tokens
    max_num_seqs: int = Field(default=16, ge=1)
    kv_cache_gib: int | None = Field(
        default=2, ge=1,
        description="KV-cache size. CPU: passed unless None (None: vLLM sizes it itself). "
        "GPU: passed only when set explicitly; otherwise gpu_memory_utilization sizes it.",
    )
    enforce_eager: bool | None = Field(
        default=None,
        description="None: eager on CPU (compiled mode starts in minutes there), CUDA graphs "
        "on a GPU.",
    )
    seed: int = 0

    # GPU knobs. On CPU, gpu_memory_utilization is ignored and the others are passed to vLLM
    # only when set explicitly, so CPU defaults give the same engine as before.
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1,
        description="The engine's share of the card (weights + activations + KV cache); None: "
        "vLLM's default (0.9). Engines sharing one GPU split it, e.g. 0.45 each.",
    )
    load_format: str = "auto"  # "dummy": random weights, for 8B-shaped runs without a download
    tokenizer: str | None = None  # tokenizer dir or HF id; None: the model's own
    quantization: Literal["fp8"] | None = None  # fp8: weights quantized online at load
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"  # fp8 roughly doubles the KV-cache tokens
    tensor_parallel_size: int = Field(default=1, ge=1)  # GPUs one engine spans
    max_num_batched_tokens: int | None = Field(default=None, ge=1)  # None: vLLM's default
    # The structured-output backend the answer expression runs on; auto: vLLM's choice
    # (xgrammar, falling back to guidance where xgrammar cannot take the expression).
    structured_output_backend: Literal["auto", "xgrammar", "guidance"] = "auto"
    # Threads that fill the structured-output token masks of one decode step (service.mask_fill);
    # None: half the cores, at most 8; 1 or 0: vLLM's own (one thread below 128 requests).
    mask_fill_threads: int | None = Field(default=None, ge=0, le=64)

    @field_validator("base")
    @classmethod
    def _known_base(cls, value: str) -> str:
        return known_base(value)

    @property
    def format(self) -> ChatFormat:
        return self.chat_format or BASES[self.base].chat_format


def default_engines() -> list[EngineSettings]:
    """The embedded default: the tiny model standing in for both 8B bases."""
    return [EngineSettings(base="llama"), EngineSettings(base="deepseek")]


class ServiceSettings(BaseSettings):
    """Everything the service reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="FORECAST_SERVICE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of the admin routes; unset disables them."
    )
    adapter_root: Path = Path("var/adapters")
    db_url: str = "sqlite:///var/service/forecasts.sqlite3"
    engines: list[EngineSettings] = Field(default_factory=default_engines)

    # Adapters and routing at start-up.
    preload: list[str] = Field(
        default_factory=list,
        description="Adapter names (or name@version) to load at start, each served under "
        "its own name; without a version the newest on disk.",
    )
    routing: dict[str, float] = Field(
        default_factory=dict,
        description="alias -> weight; empty: equal weights over the preloaded adapters.",
    )
    routing_salt: str = "dow30-ab"  # part of the sticky hash: change it to reshuffle clients
    shadow: str | None = None  # alias that gets a copy of traffic, answer logged only
    # The model name OpenAI-compatible clients give for the A/B routing table (sticky by the
    # X-Client-Key header or the body's `user`); aliases and name@version serve directly.
    router_model: str = Field(default="dow30", min_length=1, max_length=64, pattern=r"^[^@\s]+$")
    shadow_fraction: float = Field(default=1.0, ge=0.0, le=1.0)
    # Fold the version each adapter's own alias serves into its base's weights (base speed
    # for the dominant arm; other versions through difference LoRAs, service.fold). None: on
    # where the engines run on a GPU (where the LoRA path costs 17-24 % of the throughput,
    # README); off on CPU, where folding gains nothing measurable. Costs: bf16 folding rounds
    # W + s·B·A once (answers can differ from the LoRA path at rounding level), difference
    # LoRAs need max_lora_rank >= the sum of two ranks, the touched weights are kept on the
    # host. false turns it off.
    fold_promoted: bool | None = None
    fold_dir: Path = Path("var/service/folded")  # difference adapters are written here
    fold_drain_timeout_s: float = Field(default=120.0, gt=0)  # requests not done by then: no fold
    watch_adapters: bool = False
    watch_interval_s: float = Field(default=5.0, gt=0)

    # Generation.
    max_new_tokens: int = Field(default=1536, ge=1, le=8192)
    temperature: float = Field(default=0.0, ge=0.0)
    seed: int = 0
    # Answers are decoded under the FinGPT answer expression (forecast.answer_format, vLLM
    # structured output) with bounds fitted so that a whole answer fits max_new_tokens:
    # every answer has its three sections and a Prediction line. Off: free text (comparison).
    structured_answers: bool = True
    # An answer that ends before its Prediction line (free text, or an engine without
    # structured output) gets one short constrained request for its bin
    # (forecast.answer.probe_text; the prediction's source is then "probe").
    probe_unparsed: bool = True
    weeks: int = Field(default=4, ge=1, le=12)  # FinGPT-Forecaster: 4 weeks, 5 news a week
    news_per_week: int = Field(default=5, ge=0, le=20)
    with_financials: bool = True
    default_as_of: dt.date | None = Field(
        default=None, description="Date used when a request names none; None: today."
    )

    # Limits.
    max_inflight: int = Field(default=64, ge=1)  # forecasts in the engines; beyond: queue or 503
    max_queued: int = Field(default=0, ge=0)  # forecasts waiting for a slot, first come first served
    queue_timeout_s: float = Field(default=30.0, gt=0)  # a queued forecast then gets 503
    retry_after_s: int = Field(default=2, ge=1)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    body_timeout_s: float = Field(default=10.0, gt=0)  # a body not in by then: 408
    max_batch: int = Field(default=64, ge=1)
    ready_probe_s: float = Field(default=30.0, gt=0)  # readiness probes an engine this often
    ready_timeout_s: float = Field(default=30.0, gt=0)  # ... and gives up after this long
    # Market data: providers run on a pool of their own, never on the shared worker threads.
    provider_threads: int = Field(default=8, ge=1)  # provider calls (and their retries) at once
    provider_deadline_s: float = Field(default=30.0, gt=0)  # data not in by then: 503

    # Engine supervision (when the entry point lets the app restart engines).
    engine_check_s: float = Field(default=2.0, gt=0)  # health of every engine, this often
    restart_backoff_s: float = Field(default=1.0, gt=0)  # first wait after a failed start
    restart_backoff_max_s: float = Field(default=60.0, gt=0)  # ... doubling up to this
    # An engine whose in-flight requests produce no token for this long is treated as dead:
    # they get 503 and the engine is restarted (service.watchdog).
    engine_stall_s: float = Field(default=60.0, gt=0)

    # Scoring realized accuracy.
    score_interval_s: float = Field(default=3600.0, gt=0)

    @field_validator("routing")
    @classmethod
    def _routable(cls, value: dict[str, float]) -> dict[str, float]:
        problem = routing_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _default_arms_routable(self) -> ServiceSettings:
        if not self.routing:  # the preloaded names become the arms
            problem = routing_problem({spec.partition("@")[0]: 1.0 for spec in self.preload})
            if problem is not None:
                raise ValueError(f"preload (the default routing arms): {problem}")
        return self

    def admin_token_value(self) -> str | None:
        """The token in clear for the comparison only; never log it."""
        if self.admin_token is None:
            return None
        return self.admin_token.get_secret_value() or None
