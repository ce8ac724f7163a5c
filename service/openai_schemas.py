"""Request and response bodies of the OpenAI-compatible routes (``service.routes.openai``).

Requests carry the API's common fields; a field the service does not implement is refused
with a 400 that names it (never silently ignored when it would change the answer), while
fields that change nothing here (``frequency_penalty`` of 0, a vLLM ``repetition_penalty`` of
1, unknown extras) pass, as vLLM's own server lets them. Responses are built as plain dicts in
the API's shapes (``chat.completion``, ``text_completion`` and their stream chunks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.errors import BadRequest

MAX_STOPS = 4  # the API's limit


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] = Field(description="Text, or text parts (no images).")
    name: str | None = None

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """The fields chat and text completions share."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = 1.0  # vLLM's extension; `vllm bench serve` sends 1.0

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences")
        return value

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return tuple(s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def budget(self) -> int | None:
        return self.max_tokens

    def refuse_unsupported(self) -> None:
        """400 for what this service does not do, naming the field."""
        if self.n != 1:
            unsupported("n", "only n=1 is supported")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) != 0.0:
                unsupported(name, f"{name} is not supported (only 0)")
        if self.repetition_penalty != 1.0:
            unsupported("repetition_penalty", "repetition_penalty is not supported (only 1)")


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    def budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.logprobs or self.top_logprobs:
            unsupported("logprobs", "logprobs are not supported")
        if self.tools or self.tool_choice not in (None, "none"):
            unsupported("tools", "tools are not supported")
        if self.response_format is not None and self.response_format.get("type") != "text":
            unsupported("response_format", "only response_format {'type': 'text'} is supported")


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] = Field(
        description="The model input, verbatim (no special tokens added): a chat-formatted "
        "prompt carries its own BOS. A list must hold exactly one string."
    )
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            unsupported("prompt", "a prompt list must hold exactly one string")
        if self.logprobs is not None:
            unsupported("logprobs", "logprobs are not supported")
        for name, off in (("echo", False), ("suffix", None), ("best_of", None)):
            if getattr(self, name) not in (off, 1):
                unsupported(name, f"{name} is not supported")


def unsupported(param: str, message: str) -> None:
    raise BadRequest(message, code="unsupported_parameter", param=param)


# -- responses -----------------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    root: str
    parent: str | None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


@dataclass(frozen=True)
class Head:
    """What every response and chunk of one request repeats."""

    id: str
    created: int
    model: str  # as the request named it
    fingerprint: str  # the adapter version that answered, name@version

    def fields(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id, "object": obj, "created": self.created, "model": self.model,
            "system_fingerprint": self.fingerprint,
        }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    chat: bool, head: Head, text: str, finish_reason: str, used: dict[str, int]
) -> dict[str, Any]:
    """A whole ``chat.completion`` or ``text_completion``."""
    answer: dict[str, Any] = (
        {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
    )
    choices = [{"index": 0, **answer, "logprobs": None, "finish_reason": finish_reason}]
    obj = "chat.completion" if chat else "text_completion"
    return head.fields(obj) | {"choices": choices, "usage": used}


def chunk_body(
    chat: bool, head: Head, text: str | None, finish_reason: str | None = None, *,
    role: bool = False, with_usage: bool = False,
) -> dict[str, Any]:
    """One stream chunk: a text delta, the role (chat's first chunk) or the finish reason.
    With ``include_usage`` every chunk carries ``usage: null`` until the last (usage) one."""
    if chat:
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        piece: dict[str, Any] = {"delta": delta}
    else:
        piece = {"text": text or ""}
    choices = [{"index": 0, **piece, "logprobs": None, "finish_reason": finish_reason}]
    out = head.fields("chat.completion.chunk" if chat else "text_completion") | {"choices": choices}
    return out | ({"usage": None} if with_usage else {})


def usage_chunk(chat: bool, head: Head, used: dict[str, int]) -> dict[str, Any]:
    """The last chunk of a stream with ``include_usage``: no choices, the usage."""
    return head.fields("chat.completion.chunk" if chat else "text_completion") | {
        "choices": [], "usage": used,
    }
