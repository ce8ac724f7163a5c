"""Per-request prompt options: the window a request asks for, and whether it fits the context.

A request may set ``weeks``, ``news_per_week`` and ``with_financials`` (``schemas.PromptOptionsIn``);
what it leaves out comes from the settings. Before any market data is fetched,
:class:`ContextCheck` refuses (422 ``prompt_too_long``) a window whose longest prompt, plus
``max_new_tokens`` and the bin probe, would not fit ``max_model_len`` of every engine: the
request may be routed to any of them, so the smallest context decides.

"Longest prompt" is measured as at start-up (:func:`service.preflight.longest_prompt_tokens`:
every member on every Sunday with news in the bundled snapshot, in the engine's chat format,
counted with its tokenizer). Two things keep the check cheap:

- a window no larger than the settings' own (fewer or as many weeks and headlines, financials
  only if the settings have them) is accepted without measuring: its prompts are the settings'
  prompts with parts left out, and ``python -m service`` refuses to start when the settings'
  window does not fit (``preflight.check_prompt_fits``);
- a larger one is measured once per window (tokenizers loaded once per app, in a worker
  thread) and the verdict kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping

import anyio

from forecast.windows import WindowConfig
from service.engine import EngineClient, EngineInfo
from service.errors import InvalidRequest, Unavailable
from service.preflight import (
    PreflightError,
    Tokenizer,
    longest_prompt_tokens,
    probe_reserve,
    window_of,
)
from service.schemas import PromptOptions, PromptOptionsIn
from service.settings import EngineSettings, ServiceSettings

TokenizerFor = Callable[[EngineSettings], Tokenizer]


def resolve_window(options: PromptOptionsIn, default: WindowConfig) -> WindowConfig:
    """The request's options over the service's default window (whose other fields stay)."""
    return dataclasses.replace(
        default,
        weeks=default.weeks if options.weeks is None else options.weeks,
        news_per_week=default.news_per_week if options.news_per_week is None else options.news_per_week,
        with_financials=(
            default.with_financials if options.with_financials is None else options.with_financials
        ),
    )


def options_of(window: WindowConfig) -> PromptOptions:
    return PromptOptions(
        weeks=window.weeks, news_per_week=window.news_per_week, with_financials=window.with_financials
    )


def within(window: WindowConfig, bound: WindowConfig) -> bool:
    """Whether every prompt ``window`` builds is one ``bound`` builds with parts left out."""
    same_rest = dataclasses.replace(
        window, weeks=bound.weeks, news_per_week=bound.news_per_week,
        with_financials=bound.with_financials,
    ) == bound
    return (
        same_rest
        and window.weeks <= bound.weeks
        and window.news_per_week <= bound.news_per_week
        and (bound.with_financials or not window.with_financials)
    )


class ContextCheck:
    """Refuses windows too long for some engine's context; one instance per app."""

    def __init__(
        self,
        settings: ServiceSettings,
        engines: Mapping[str, EngineClient],
        tokenizer_for: TokenizerFor,
    ) -> None:
        self._settings = settings
        self._engines = engines  # the app's own map (formats do not change on a restart)
        self._specs = {e.base: e for e in settings.engines}
        self._tokenizer_for = tokenizer_for
        self._checked = window_of(settings)  # start-up's preflight measured this one
        self._tokenizers: dict[str, Tokenizer] = {}
        self._verdicts: dict[WindowConfig, str | None] = {}  # None: fits; else why not
        self._lock = asyncio.Lock()

    async def window(self, options: PromptOptionsIn) -> WindowConfig:
        """The request's prompt options over the settings' window; 422 when they could build
        a prompt too long for an engine's context (nothing fetched yet)."""
        window = resolve_window(options, self._checked)
        await self.check(window)
        return window

    async def check(self, window: WindowConfig) -> None:
        """Raise :class:`InvalidRequest` when ``window`` may build a prompt too long."""
        if within(window, self._checked):
            return
        if window not in self._verdicts:
            async with self._lock:  # one measurement per window, however many ask at once
                if window not in self._verdicts:
                    self._verdicts[window] = await anyio.to_thread.run_sync(self._measure, window)
        reason = self._verdicts[window]
        if reason is not None:
            raise InvalidRequest(reason, code="prompt_too_long")

    def spec_of(self, info: EngineInfo) -> EngineSettings:
        """The settings' entry for ``info``'s base, with the tokenizer and context the engine
        itself reports (they win: the engine may have been started with other settings)."""
        spec = self._specs.get(info.base) or EngineSettings(base=info.base)
        updates: dict[str, object] = {}
        if info.tokenizer is not None:
            updates["tokenizer"] = info.tokenizer
        if info.max_model_len is not None:
            updates["max_model_len"] = info.max_model_len
        return spec.model_copy(update=updates)

    async def tokenizer(self, info: EngineInfo) -> Tokenizer:
        """The tokenizer of ``info``'s engine (loaded once, in a worker thread)."""
        spec = self.spec_of(info)
        name = spec.tokenizer or spec.model
        if name not in self._tokenizers:
            async with self._lock:
                if name not in self._tokenizers:
                    await anyio.to_thread.run_sync(self._tokenizer, spec)
        return self._tokenizers[name]

    def _measure(self, window: WindowConfig) -> str | None:
        s = self._settings
        for base, engine in self._engines.items():
            spec = self._specs.get(base) or EngineSettings(base=base)
            tokenizer = self._tokenizer(spec)
            prompt = longest_prompt_tokens(window, engine.info.chat_format, tokenizer)
            probe = probe_reserve(s, tokenizer)
            budget = spec.max_model_len - s.max_new_tokens - probe
            if prompt > budget:
                financials = "with" if window.with_financials else "without"
                return (
                    f"weeks={window.weeks}, news_per_week={window.news_per_week} {financials} "
                    f"financials can build a prompt of {prompt} tokens; engine {base!r} has room "
                    f"for {budget} (max_model_len {spec.max_model_len} less {s.max_new_tokens} "
                    f"new tokens{f' and {probe} for the bin probe' if probe else ''}). Ask for "
                    f"fewer weeks or headlines"
                )
        return None

    def _tokenizer(self, spec: EngineSettings) -> Tokenizer:
        name = spec.tokenizer or spec.model
        if name not in self._tokenizers:
            try:
                self._tokenizers[name] = self._tokenizer_for(spec)
            except PreflightError as exc:
                raise Unavailable(
                    f"cannot check the prompt length: {exc}", code="tokenizer_unavailable"
                ) from exc
        return self._tokenizers[name]
