"""Chat formats: the one prompt model rendered for Llama-2, Llama-3.1-Instruct and DeepSeek-R1.

``render_chat(prompt, fmt)`` gives the full model input exactly as each base's official chat
template renders a system + user conversation with the generation prompt; ``answer_target``
the text a fine-tune learns after it; ``parse_llama2`` reads an official FinGPT Llama-2 prompt
back into the model. Training and serving both render through here, and the official
templates themselves ship beside this file (``chat_templates/``) so any other stack that
applies the tokenizer's chat template sees the same text (tests hold the two equal).

- **Llama-3.1-Instruct**: the system header always comes first and carries
  ``Cutting Knowledge Date: December 2023`` and ``Today Date: <d Mon YYYY>``; here the date is
  the forecast's ``as_of`` (the template's own default is the release date, 26 Jul 2024).
  Message contents are trimmed, as the template does.
- **DeepSeek-R1-Distill**: the system text follows BOS with no role marker, and the
  generation prompt opens the reasoning: ``<｜Assistant｜><think>\n``. The fine-tune target
  closes an empty think block (``\n</think>\n\n``) and then writes the FinGPT answer, so the
  served model keeps the reasoning format it was distilled with.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

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
    think_prefix: str = ""  # what the target writes before the answer (after the prompt's own)
    template: str = ""  # the official chat template's file in chat_templates/ ("" for Llama-2)


SPECS: dict[ChatFormat, FormatSpec] = {
    ChatFormat.LLAMA2: FormatSpec(bos="", eos="</s>"),
    ChatFormat.LLAMA3: FormatSpec(
        bos="<|begin_of_text|>", eos="<|eot_id|>", template="llama-3.1-instruct.jinja"
    ),
    ChatFormat.DEEPSEEK_R1: FormatSpec(
        bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", think_prefix="\n</think>\n\n",
        template="deepseek-r1-distill.jinja",
    ),
}
TEMPLATE_DIR = Path(__file__).with_name("chat_templates")
LLAMA31_KNOWLEDGE_CUTOFF = "December 2023"
LLAMA31_DEFAULT_DATE = "26 Jul 2024"  # the template's date_string when none is passed
DEEPSEEK_THINK_OPEN = "<think>\n"  # the official generation prompt ends with it


def official_template(fmt: ChatFormat) -> str:
    """The base's official chat template (Jinja text), as its tokenizer_config.json carries it."""
    name = SPECS[fmt].template
    if not name:
        raise ValueError(f"{fmt} has no chat template file")
    return (TEMPLATE_DIR / name).read_text()


def llama31_date(day: dt.date) -> str:
    """``Today Date`` as the Llama-3.1 template writes it: ``26 Jul 2024``."""
    return day.strftime("%d %b %Y")

_L2_OPEN, _L2_CLOSE = "[INST]", "[/INST]"
_L2_SYS_OPEN, _L2_SYS_CLOSE = "<<SYS>>\n", "\n<</SYS>>\n\n"


def render_messages(
    system: str | None, user: str, fmt: ChatFormat, today: dt.date | None = None
) -> str:
    """Wrap a system and a user message in ``fmt``, ending where the assistant starts.

    ``today``: Llama-3.1's ``Today Date`` (None: the template's own default)."""
    if fmt is ChatFormat.LLAMA2:
        sys_part = f"{_L2_SYS_OPEN}{system}{_L2_SYS_CLOSE}" if system is not None else ""
        return f"{_L2_OPEN}{sys_part}{user}{_L2_CLOSE}"
    if fmt is ChatFormat.LLAMA3:
        date = llama31_date(today) if today is not None else LLAMA31_DEFAULT_DATE
        return (
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            f"Cutting Knowledge Date: {LLAMA31_KNOWLEDGE_CUTOFF}\nToday Date: {date}\n\n"
            f"{(system or '').strip()}<|eot_id|>"
            f"<|start_header_id|>user<|end_header_id|>\n\n{user.strip()}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        )
    # DeepSeek-R1-Distill: system text right after BOS, no role marker; the reasoning opens.
    return (
        f"<｜begin▁of▁sentence｜>{system or ''}<｜User｜>{user}<｜Assistant｜>{DEEPSEEK_THINK_OPEN}"
    )


def render_chat(prompt: ForecastPrompt, fmt: ChatFormat) -> str:
    """The model input for ``prompt``: its base's official template, ``Today Date`` = as_of."""
    system = SYSTEM_PROMPT if prompt.with_system else None
    return render_messages(system, render_user(prompt), fmt, today=prompt.as_of)


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
