"""Start-up checks: refuse a configuration that cannot work before any engine starts.

``python -m service`` calls :func:`preflight` after ``prepare_settings`` and turns a
:class:`PreflightError` into a non-zero exit with its message. Two checks:

- **GPU memory shares fit the card.** Engines are assumed to share the same GPU(s); vLLM
  refuses to start an engine when the free memory is below its ``gpu_memory_utilization``
  share, so the shares must add up to at most :data:`MAX_TOTAL_SHARE`.
- **The longest prompt fits the context.** The prompt text has no length cap (headlines and
  summaries are shown whole), so the longest prompt is measured on real data: every Dow member
  on every Sunday with news in the bundled snapshot, rendered in the engine's chat format and
  counted with its tokenizer (:func:`longest_prompt_tokens`). Live data can exceed it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from forecast.answer import PROBE_HEADER, PROBE_MAX_TOKENS
from forecast.errors import NoDataError
from forecast.prompt import ForecastPrompt, render_user
from forecast.providers.snapshot import SNAPSHOT_FIRST, SNAPSHOT_LATEST, SnapshotMarketData
from forecast.templates import ChatFormat, render_chat
from forecast.universe import members
from forecast.windows import WEEK, WindowConfig, build_prompt
from service.settings import EngineSettings, ServiceSettings

# Each engine process also holds a CUDA context (~0.5 GiB) outside its share.
MAX_TOTAL_SHARE = 0.98
VLLM_DEFAULT_SHARE = 0.9  # vLLM's gpu_memory_utilization when none is given
# Sundays (as_of) whose prompts carry news in the bundled snapshot (news 2023-09-22..12-31).
SNAPSHOT_SUNDAYS = (SNAPSHOT_FIRST, SNAPSHOT_LATEST)


class PreflightError(Exception):
    """The configuration cannot work; the service refuses to start with this message."""


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


# --- GPU memory shares --------------------------------------------------------------------


def check_gpu_shares(engines: Sequence[EngineSettings], *, gpu: bool, gpus: int) -> None:
    """Every engine fits the GPUs there are, and their memory shares add up to at most
    :data:`MAX_TOTAL_SHARE`. Nothing to check on CPU (the shares are ignored there)."""
    if not gpu:
        return
    for e in engines:
        if e.tensor_parallel_size > gpus:
            raise PreflightError(
                f"engine {e.base!r} asks for tensor_parallel_size={e.tensor_parallel_size} but "
                f"this machine has {gpus} GPU(s)"
            )
    unset = [e.base for e in engines if e.gpu_memory_utilization is None]
    if unset and len(engines) > 1:
        raise PreflightError(
            f"{len(engines)} engines share the GPU but {', '.join(map(repr, unset))} set no "
            f"gpu_memory_utilization: vLLM's default of {VLLM_DEFAULT_SHARE:g} each would not fit. Set a share "
            f"per engine in FORECAST_SERVICE_ENGINES, e.g. {VLLM_DEFAULT_SHARE / len(engines):.2f} each"
        )
    shares = {e.base: e.gpu_memory_utilization or VLLM_DEFAULT_SHARE for e in engines}
    total = round(sum(shares.values()), 6)
    if total > MAX_TOTAL_SHARE:
        parts = " + ".join(f"{base} {share:g}" for base, share in shares.items())
        raise PreflightError(
            f"gpu_memory_utilization of the engines sharing the GPU adds up to {total:g} "
            f"({parts}); at most {MAX_TOTAL_SHARE:g}: each engine process also holds a CUDA "
            f"context outside its share, and vLLM refuses to start an engine when the free "
            f"memory is below its share. Lower the shares in FORECAST_SERVICE_ENGINES"
        )


# --- the longest prompt -------------------------------------------------------------------


def window_of(settings: ServiceSettings) -> WindowConfig:
    """The prompt window the service builds with (as ``service.forecaster`` does)."""
    return WindowConfig(
        weeks=settings.weeks,
        news_per_week=settings.news_per_week,
        with_financials=settings.with_financials,
    )


@functools.lru_cache(maxsize=16)
def longest_prompts(window: WindowConfig, keep: int = 5) -> tuple[ForecastPrompt, ...]:
    """The ``keep`` longest prompts (user-message characters) that ``window`` builds from the
    bundled snapshot: every member on every Sunday with news (~1 s for 4 weeks × 5 news)."""
    market = SnapshotMarketData()
    found: list[tuple[int, ForecastPrompt]] = []
    day, last = SNAPSHOT_SUNDAYS
    while day <= last:
        for ticker in members(day):
            try:
                prompt = build_prompt(market, ticker, day, window).prompt
            except NoDataError:
                continue
            found.append((len(render_user(prompt)), prompt))
        found = sorted(found, key=lambda item: item[0], reverse=True)[:keep]
        day += WEEK
    return tuple(prompt for _, prompt in found)


def longest_prompt_tokens(window: WindowConfig, fmt: ChatFormat, tokenizer: Tokenizer) -> int:
    """Tokens of the longest prompt ``window`` builds, in chat format ``fmt`` (the rendered
    text carries its own BOS: no special tokens added, as the engine is called)."""
    return max(
        len(tokenizer.encode(render_chat(p, fmt), add_special_tokens=False))
        for p in longest_prompts(window)
    )


def load_tokenizer(engine: EngineSettings) -> Tokenizer:
    from transformers import AutoTokenizer

    name = engine.tokenizer or engine.model
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(name)
    except Exception as exc:
        raise PreflightError(f"engine {engine.base!r}: cannot load tokenizer {name!r}: {exc}") from exc
    return tokenizer  # type: ignore[no-any-return]


def probe_reserve(settings: ServiceSettings, tokenizer: Tokenizer) -> int:
    """Context the bin probe needs beyond the answer (its header and its own tokens), when on."""
    if not settings.probe_unparsed:
        return 0
    return len(tokenizer.encode(PROBE_HEADER, add_special_tokens=False)) + PROBE_MAX_TOKENS


def check_prompt_fits(
    settings: ServiceSettings, tokenizer_for: Callable[[EngineSettings], Tokenizer] = load_tokenizer
) -> None:
    """The longest prompt plus ``max_new_tokens`` (plus the bin probe, when on) fits every
    engine's ``max_model_len``."""
    window = window_of(settings)
    tokenizers: dict[str, Tokenizer] = {}
    for engine in settings.engines:
        name = engine.tokenizer or engine.model
        if name not in tokenizers:
            tokenizers[name] = tokenizer_for(engine)
        tokenizer = tokenizers[name]
        prompt = longest_prompt_tokens(window, engine.format, tokenizer)
        probe = probe_reserve(settings, tokenizer)
        need = prompt + settings.max_new_tokens + probe
        if need > engine.max_model_len:
            financials = ", with financials" if settings.with_financials else ""
            probe_text = f" + {probe} for the bin probe" if probe else ""
            raise PreflightError(
                f"engine {engine.base!r}: the longest prompt these settings build "
                f"(weeks={settings.weeks} × news_per_week={settings.news_per_week}{financials}, "
                f"longest in the bundled snapshot) is {prompt} tokens; with max_new_tokens="
                f"{settings.max_new_tokens}{probe_text} it needs {need} > max_model_len="
                f"{engine.max_model_len}. Raise max_model_len in FORECAST_SERVICE_ENGINES or "
                f"lower FORECAST_SERVICE_WEEKS / FORECAST_SERVICE_NEWS_PER_WEEK / "
                f"FORECAST_SERVICE_MAX_NEW_TOKENS"
            )


# --- entry point --------------------------------------------------------------------------


def preflight(
    settings: ServiceSettings,
    *,
    gpu: bool,
    gpus: int,
    tokenizer_for: Callable[[EngineSettings], Tokenizer] = load_tokenizer,
) -> None:
    """Raise :class:`PreflightError` when ``settings`` cannot work on this machine."""
    check_gpu_shares(settings.engines, gpu=gpu, gpus=gpus)
    check_prompt_fits(settings, tokenizer_for)
