"""Training configuration: one frozen dataclass per concern, defaults that run the 8B recipe.

A preset is a JSON file under ``training/configs/`` with any subset of the sections
``lora``, ``data``, ``train``, ``eval`` and the top-level run fields; :func:`load_run` merges
it over the defaults and validates it. ``cpu_tiny.json`` is the CPU slice on the tiny model,
``gpu_8b.json`` the FinGPT recipe on the 8B bases with the measured GPU throughput knobs on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from forecast.basemodels import (
    BASES,
    TINY_MODEL_DIR,
    TINY_MODEL_ID,
    BaseSpec,
    adapter_name,
    materialize_tiny_model,
)

CONFIG_DIR = Path(__file__).parent / "configs"
DS_ZERO0_ZEROONE = CONFIG_DIR / "ds_zero0_zeroone.json"
DS_ZERO2_ADAMW = CONFIG_DIR / "ds_zero2_adamw.json"
TINY = "tiny"  # RunSettings.model value: the tiny real model stands in for the base


@dataclass(frozen=True)
class LoraSettings:
    """FinGPT-Forecaster's LoRA: rank 8, alpha 16, dropout 0.1 on the attention projections."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def validate(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ValueError("lora r and alpha must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("lora dropout must be in [0, 1)")
        if not self.target_modules:
            raise ValueError("lora needs at least one target module")


@dataclass(frozen=True)
class DataSettings:
    """Which rows train and which are held back (by date, never at random)."""

    cutoff: dt.date = dt.date(2024, 3, 24)  # train weeks end by it; held-back weeks start on it
    max_length: int = 4096  # prompt + answer tokens; news is dropped to fit, the answer never cut
    train_rows: int | None = None  # a slice spread over the train weeks; None: all
    eval_rows: int | None = None  # a slice spread over the held-back weeks; None: all
    # Extra weeks built from market data (ISO days), answered by the teacher (see teacher.py).
    market_days: tuple[dt.date, ...] = ()
    market_tickers: tuple[str, ...] | None = None
    weeks: int = 4  # history weeks of market-built prompts
    with_indicators: bool = False  # SMA/EMA/RSI/MACD section in market-built prompts

    def validate(self) -> None:
        if self.max_length < 256:
            raise ValueError("max_length below 256 leaves no room for an answer")
        for n in (self.train_rows, self.eval_rows):
            if n is not None and n < 1:
                raise ValueError("row slices must be positive (or null for all)")


@dataclass(frozen=True)
class TrainSettings:
    """HF Trainer + deepspeed. FinGPT: lr 5e-5, 5 epochs, micro-batch 1 x 16 accumulation.

    The optimizer is ZeRO-2 + AdamW (``ds_zero2_adamw.json``): FinGPT's ZeroOneAdam compresses
    gradient communication between GPUs, which buys nothing on one GPU or a CPU, and the pinned
    deepspeed does not ship it (``ds_zero0_zeroone.json`` stays for a multi-GPU build that does).
    """

    epochs: float = 5.0
    learning_rate: float = 5e-5
    micro_batch_size: int = 1
    grad_accum: int = 16
    warmup_ratio: float = 0.03
    lr_scheduler: str = "linear"
    weight_decay: float = 0.01
    save_steps: int | None = None  # None: a checkpoint (and an eval loss) per epoch
    max_steps: int | None = None  # stop after this many optimizer steps (None: all epochs)
    deepspeed_config: Path = DS_ZERO2_ADAMW
    bf16: bool = False
    gradient_checkpointing: bool = False
    seed: int = 42
    # None: the model's default attention (as before); "eager", "sdpa", "flash_attention_2", ...
    attn_implementation: str | None = None
    # Regional torch.compile: each decoder layer compiled in place (after the LoRA wrap).
    torch_compile: bool = False
    # False: plain HF Trainer in the current process, no deepspeed config (single GPU/CPU).
    use_deepspeed: bool = True
    # Several examples per row of data.max_length tokens, attention kept within each example
    # (training/packing.py: varlen flash attention on a GPU, a block-diagonal mask elsewhere).
    packing: bool = False
    # lm_head + cross-entropy only on answer positions (the prompt's logits are never needed).
    answer_only_logits: bool = False

    def validate(self) -> None:
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError("warmup_ratio must be in [0, 1)")
        if self.epochs <= 0 or self.learning_rate <= 0:
            raise ValueError("epochs and learning rate must be positive")
        if self.micro_batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch sizes must be positive")
        if self.save_steps is not None and self.save_steps < 1:
            raise ValueError("save_steps must be positive (or null for per epoch)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be positive (or null for all epochs)")
        if not self.deepspeed_config.exists():
            raise ValueError(f"deepspeed config not found: {self.deepspeed_config}")


@dataclass(frozen=True)
class EvalSettings:
    """Greedy generation on the held-back weeks, per checkpoint."""

    max_new_tokens: int = 512
    # A generation that ran out of tokens before its ``Prediction:`` line gets the header
    # appended and the bin phrase the model picks after it (constrained to the twelve), so
    # every row yields the model's own bin (counted apart in the metrics as ``probed``).
    force_prediction: bool = True
    # "vllm": one engine for the run, a LoRA per checkpoint (training/vllm_generate.py);
    # "transformers": each checkpoint merged into the base, then ``generate`` (the cross-check).
    backend: Literal["vllm", "transformers"] = "vllm"
    # vLLM only: decode under the FinGPT answer expression (forecast.answer_format); False
    # generates free text, for comparison.
    answer_grammar: bool = True
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # vLLM; auto: as the service
    kv_cache_gib: int = 1  # vLLM on CPU (a GPU sizes it from its free memory)
    # vLLM's structured-output backend for the answer expression (as the service's engine
    # setting): "auto" lets vLLM choose; a build that lacks one names the other.
    structured_output_backend: Literal["auto", "xgrammar", "guidance"] = "auto"
    # None: eager on CPU (compiled mode starts in minutes there), CUDA graphs on a GPU.
    enforce_eager: bool | None = None

    def validate(self) -> None:
        if self.structured_output_backend not in ("auto", "xgrammar", "guidance"):
            raise ValueError(f"unknown structured-output backend {self.structured_output_backend!r}")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be positive")
        if self.backend not in ("vllm", "transformers"):
            raise ValueError(f"eval backend must be vllm or transformers, not {self.backend!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"unknown eval dtype {self.dtype!r}")
        if self.kv_cache_gib < 1:
            raise ValueError("kv_cache_gib must be positive")


@dataclass(frozen=True)
class RunSettings:
    base: str = "llama"  # key of forecast.basemodels.BASES
    model: str | None = None  # None: the base's 8B id; "tiny": the tiny model stands in; or a path
    name: str | None = None  # adapter name; None: fingpt-<base>
    runs_dir: Path = Path("var/runs")
    adapter_root: Path = Path("var/adapters")
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    # A model config.json: build the model from it with random weights (no checkpoint download;
    # throughput runs). The tokenizer then comes from ``tokenizer`` (or ``model_path()``).
    random_init_config: Path | None = None
    tokenizer: str | None = None  # tokenizer path or id; None: the model's own

    @property
    def base_model(self) -> BaseSpec:
        return BASES[self.base]

    @property
    def adapter_name(self) -> str:
        return self.name or adapter_name(self.base)

    @property
    def model_id(self) -> str:
        """The model id actually trained (the tiny id when it stands in)."""
        if self.model == TINY:
            return TINY_MODEL_ID
        return self.model or self.base_model.model_id

    def model_path(self) -> str:
        """Where to load the weights from (materializing the tiny model on first use)."""
        if self.model == TINY:
            return str(materialize_tiny_model(TINY_MODEL_DIR))
        return self.model or self.base_model.model_id

    def validate(self) -> None:
        if self.base not in BASES:
            raise ValueError(f"unknown base {self.base!r}; known: {sorted(BASES)}")
        for part in (self.lora, self.data, self.train, self.eval):
            part.validate()

    def to_dict(self) -> dict[str, Any]:
        return dict(json.loads(json.dumps(dataclasses.asdict(self), default=str)))


def resolve_config(value: str | Path) -> Path:
    """A deepspeed config path as given, or a bare name looked up in ``training/configs``."""
    path = Path(value)
    return path if path.exists() or path.is_absolute() else CONFIG_DIR / path.name


def resolve_preset(value: str | Path) -> Path:
    """A preset path as given, or a shipped preset by name (``cpu_tiny`` or ``cpu_tiny.json``):
    an installed package (the images) has no ``training/configs`` under the working directory."""
    path = Path(value)
    if path.exists() or path.is_absolute() or len(path.parts) > 1:
        return path
    shipped = CONFIG_DIR / (path.name if path.suffix == ".json" else f"{path.name}.json")
    return shipped if shipped.exists() else path


_SECTIONS = {"lora": LoraSettings, "data": DataSettings, "train": TrainSettings, "eval": EvalSettings}


def _coerce(cls: type, raw: dict[str, Any]) -> Any:
    """Build a settings dataclass from JSON values (lists → tuples, ISO strings → dates)."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(raw) - set(names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        kind = str(names[key].type)
        if key == "cutoff":
            value = dt.date.fromisoformat(value)
        elif key == "market_days":
            value = tuple(dt.date.fromisoformat(v) for v in value)
        elif isinstance(value, list):
            value = tuple(value)
        elif key == "deepspeed_config":
            value = resolve_config(value)
        elif "Path" in kind and value is not None:
            value = Path(value)
        values[key] = value
    return cls(**values)


def run_from_dict(raw: dict[str, Any]) -> RunSettings:
    top = {k: v for k, v in raw.items() if k not in _SECTIONS and not k.startswith("_")}
    sections = {k: _coerce(cls, raw.get(k, {})) for k, cls in _SECTIONS.items()}
    run: RunSettings = _coerce(RunSettings, top)
    run = dataclasses.replace(run, **sections)
    run.validate()
    return run


def load_run(path: Path | None, **overrides: Any) -> RunSettings:
    """A preset (or the defaults) with top-level ``overrides`` (``base=...``) applied."""
    raw: dict[str, Any] = json.loads(path.read_text()) if path is not None else {}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return run_from_dict(raw)


def deepspeed_optimizer(path: Path) -> tuple[str, bool]:
    """The optimizer a deepspeed config names, and whether the installed deepspeed has it.

    deepspeed 0.19.8 does not ship ZeroOneAdam (nor the other 1-bit optimizers):
    ``deepspeed.initialize`` fails with "ZeroOneAdam is not a supported DeepSpeed Optimizer"
    on every accelerator and comm backend (nccl, gloo, ccl). Every preset uses
    ``ds_zero2_adamw.json``; the FinGPT config stays for a multi-GPU build that has it.
    """
    import torch
    from deepspeed.runtime.config import DEEPSPEED_OPTIMIZERS

    name = str(json.loads(path.read_text())["optimizer"]["type"])
    return name, name.lower() in DEEPSPEED_OPTIMIZERS or hasattr(torch.optim, name)


def require_supported_optimizer(path: Path) -> None:
    name, supported = deepspeed_optimizer(path)
    if not supported:
        raise SystemExit(
            f"the installed deepspeed has no {name} optimizer (named by {path.name}); "
            f"use --deepspeed-config {DS_ZERO2_ADAMW.name} or a deepspeed build that ships it"
        )
