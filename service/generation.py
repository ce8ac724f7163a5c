"""What the service asks an engine for, and how it reads the answer.

The sampling parameters come from the settings; on an engine with structured output the
answer is decoded under the FinGPT answer expression fitted to ``max_new_tokens``. An answer
the parser cannot read (cut off before its Prediction line) can have its bin probed: the
model picks one of the twelve bin phrases after its own answer and the Prediction header.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from forecast.answer import (
    PROBE_MAX_TOKENS,
    ParsedAnswer,
    bin_phrases,
    parse_answer,
    probe_text,
    read_partial,
)
from forecast.answer_format import LIMITS, answer_regex
from forecast.errors import AnswerParseError
from forecast.templates import SPECS, ChatFormat
from service.adapters import LoadedAdapter
from service.engine import Chunk, EngineClient, EngineInfo, GenerationParams
from service.settings import ServiceSettings
from service.watchdog import StallWatch

Read = tuple[ParsedAnswer | None, str | None]  # the parsed answer, or why it is not


@dataclass
class Answer:
    """An answer as it streams in (:meth:`collect`): its text, generated tokens and timings."""

    submitted: float = field(default_factory=time.perf_counter)
    pieces: list[str] = field(default_factory=list)
    tokens: int = 0
    queue_s: float | None = None  # waiting in the engine before scheduling
    first: float | None = None  # perf_counter at the first generated token
    last: float | None = None  # perf_counter once the stream ended
    finish_reason: str | None = None  # the engine's: stop | length | abort

    async def collect(self, chunks: AsyncIterator[Chunk]) -> AsyncIterator[str]:
        """The text deltas of ``chunks``, as they come, recorded here."""
        async for chunk in chunks:
            if self.first is None and (chunk.delta or chunk.tokens):
                self.first = time.perf_counter()
            if chunk.queue_s is not None:
                self.queue_s = chunk.queue_s
            self.tokens = chunk.tokens
            if chunk.finish_reason is not None:
                self.finish_reason = chunk.finish_reason
            if chunk.delta:
                self.pieces.append(chunk.delta)
                yield chunk.delta
        self.last = time.perf_counter()  # decode rate: the answer's own tokens and time

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def ttft_s(self) -> float | None:
        return None if self.first is None else self.first - self.submitted

    @property
    def generation_s(self) -> float | None:
        return None if self.first is None or self.last is None else self.last - self.first


def answer_params(settings: ServiceSettings, info: EngineInfo) -> GenerationParams:
    structured = settings.structured_answers and info.structured_output
    fmt = info.chat_format
    return GenerationParams(
        max_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        seed=settings.seed if settings.temperature > 0 else None,
        stop=(SPECS[fmt].eos,),
        regex=structured_regex(fmt, settings.max_new_tokens) if structured else None,
    )


@functools.lru_cache(maxsize=16)
def structured_regex(fmt: ChatFormat, max_tokens: int) -> str:
    """The FinGPT answer expression with bounds fitted to ``max_tokens`` (one string per
    format and budget, so the engine's grammar cache compiles it once)."""
    return answer_regex(fmt, LIMITS.fitting(max_tokens, fmt))


def read_answer(text: str) -> Read:
    try:
        return parse_answer(text), None
    except AnswerParseError as exc:
        return None, str(exc)


async def probe_bin(
    engine: EngineClient, watch: StallWatch, prompt: str, text: str, adapter: LoadedAdapter,
    request_id: str,
) -> ParsedAnswer | None:
    """``text`` read with the bin the model picks (constrained to the twelve phrases) after
    it and the Prediction header. Raises the engine's error when the probe fails."""
    params = GenerationParams(max_tokens=PROBE_MAX_TOKENS, temperature=0.0, choices=tuple(bin_phrases()))
    pieces: list[str] = []
    probe = engine.generate(prompt + probe_text(text), params, adapter.engine_lora, request_id)
    async for chunk in watch.chunks(adapter.base, probe):
        pieces.append(chunk.delta)
    return read_partial(text, "".join(pieces))
