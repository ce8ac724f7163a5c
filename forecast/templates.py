"""Chat formats: the one prompt model rendered for Llama-2, Llama-3 Instruct and DeepSeek-R1.

``render_chat(prompt, fmt)`` gives the full model input; ``answer_target(answer, fmt)`` the
text a fine-tune learns after it (DeepSeek-R1 answers open with an empty think block, so the
served model keeps the reasoning format it was distilled with); ``parse_llama2`` reads an
official FinGPT Llama-2 prompt back into the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from forecast.errors import PromptParseError
from forecast.prompt import SYSTEM_PROMPT, ForecastPrompt, parse_user, render_user


class ChatFormat(StrEnum):
    LLAMA2 = "llama2"
    LLAMA3 = "llama3"
    DEEPSEEK_R1 = "deepseek-r1"


@dataclass(frozen=True)
class FormatSpec:
    bos: str  # written into the text; tokenize with add_special_tokens=False when non-empty
    eos: str  # the end-of-turn marker the answer ends with
    think_prefix: str = ""


SPECS: dict[ChatFormat, FormatSpec] = {
    ChatFormat.LLAMA2: FormatSpec(bos="", eos="</s>"),
    ChatFormat.LLAMA3: FormatSpec(bos="<|begin_of_text|>", eos="<|eot_id|>"),
    ChatFormat.DEEPSEEK_R1: FormatSpec(
        bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", think_prefix="<think>\n\n</think>\n\n"
    ),
}

_L2_OPEN, _L2_CLOSE = "[INST]", "[/INST]"
_L2_SYS_OPEN, _L2_SYS_CLOSE = "<<SYS>>\n", "\n<</SYS>>\n\n"


def render_messages(system: str | None, user: str, fmt: ChatFormat) -> str:
    """Wrap a system and a user message in ``fmt``, ending where the assistant starts."""
    if fmt is ChatFormat.LLAMA2:
        sys_part = f"{_L2_SYS_OPEN}{system}{_L2_SYS_CLOSE}" if system is not None else ""
        return f"{_L2_OPEN}{sys_part}{user}{_L2_CLOSE}"
    if fmt is ChatFormat.LLAMA3:
        head = "<|begin_of_text|>"
        if system is not None:
            head += f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
        return (
            f"{head}<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        )
    # DeepSeek-R1-Distill: system text right after BOS, no role header for it.
    return f"<｜begin▁of▁sentence｜>{system or ''}<｜User｜>{user}<｜Assistant｜>"


def render_chat(prompt: ForecastPrompt, fmt: ChatFormat) -> str:
    system = SYSTEM_PROMPT if prompt.with_system else None
    return render_messages(system, render_user(prompt), fmt)


def answer_target(answer: str, fmt: ChatFormat) -> str:
    """What the model is trained to produce after :func:`render_chat`'s text."""
    spec = SPECS[fmt]
    return f"{spec.think_prefix}{answer}{spec.eos}"


def parse_llama2(text: str) -> ForecastPrompt:
    """Read a Llama-2 ``[INST]<<SYS>>…[/INST]`` FinGPT prompt back into the prompt model."""
    if not (text.startswith(_L2_OPEN) and text.endswith(_L2_CLOSE)):
        raise PromptParseError("not a Llama-2 [INST] prompt")
    inner = text[len(_L2_OPEN) : -len(_L2_CLOSE)]
    with_system = inner.startswith(_L2_SYS_OPEN)
    if with_system:
        system, sep, inner = inner[len(_L2_SYS_OPEN) :].partition(_L2_SYS_CLOSE)
        if not sep or system != SYSTEM_PROMPT:
            raise PromptParseError("unexpected system prompt")
    return parse_user(inner, with_system=with_system)
