"""What decoding under the FinGPT answer expression costs: decode tokens/s and forecasts/s of
the product's engine (``service.engine.VLLMEngine``, a LoRA adapter per request) with and
without the constraint, on the same prompts, in one run.

    python benchmarks/structured_output.py [--n 16] [--max-tokens 768] [--rounds 2]
    # on a GPU, 8B shapes (random weights, bf16, CUDA graphs), the guidance backend:
    python benchmarks/structured_output.py --shape 8b --n 64 --max-tokens 1024 \
        --backend guidance --name structured_output_gpu

Per base (Llama-3 and DeepSeek-R1 chat formats), one engine; a warm-up request per mode first
(the expression is compiled there, once per format and budget; its time is reported apart);
then ``--rounds`` alternating rounds of ``--n`` concurrent requests per mode. Free text and
constrained answers have different lengths, so the comparison is per token (decode tokens/s
over the round's wall time) as well as per forecast. On this CPU the tiny model stands in for
the 8B bases (``--model`` takes another); ``--shape 8b`` builds each base's 8B shape
(``forecast.basemodels.materialize_8b_shape``: real config and Llama-3 tokenizer, weights
``load_format="dummy"``) and a random rank-8 LoRA of that shape. Random weights write random
text: the ratio per token is the constraint's cost, the answers themselves mean nothing. Writes
``benchmarks/results/<--name>.json``.

``--mask-fill-threads N`` sets the engine's mask-fill threads (``service.mask_fill``; 0: vLLM's
own serial fill below 128 requests); ``--uncounted`` adds a reference mode, the same expression
with its counted repeats made uncounted (what the mask costs without counting; its answers are
not bounded, the product does not serve it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from pathlib import Path
from statistics import fmean
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_dtype, machine, prompts, random_adapter, tiny_model, write_result  # noqa: E402
from forecast.answer import parse_answer  # noqa: E402
from forecast.answer_format import LIMITS, answer_regex  # noqa: E402
from forecast.errors import AnswerParseError  # noqa: E402
from forecast.templates import SPECS, ChatFormat  # noqa: E402
from service.engine import GenerationParams, LoraRef, VLLMEngine  # noqa: E402
from service.settings import EngineSettings  # noqa: E402

BASES = {"llama": ChatFormat.LLAMA3, "deepseek": ChatFormat.DEEPSEEK_R1}


async def one(engine: VLLMEngine, prompt: str, params: GenerationParams, lora: LoraRef, rid: str) -> dict[str, Any]:
    started = time.perf_counter()
    first: float | None = None
    text, tokens = "", 0
    async for chunk in engine.generate(prompt, params, lora, rid):
        if first is None and chunk.tokens:
            first = time.perf_counter()
        text += chunk.delta
        tokens = chunk.tokens
    done = time.perf_counter()
    try:
        parsed = parse_answer(text).prediction_source == "line"
    except AnswerParseError:
        parsed = False
    return {"tokens": tokens, "ttft_s": (first or done) - started, "total_s": done - started,
            "parsed_by_line": parsed}


async def round_of(engine: VLLMEngine, batch: list[str], params: GenerationParams, lora: LoraRef, tag: str) -> dict[str, Any]:
    started = time.perf_counter()
    results = await asyncio.gather(*(one(engine, p, params, lora, f"{tag}-{i}") for i, p in enumerate(batch)))
    wall = time.perf_counter() - started
    tokens = sum(r["tokens"] for r in results)
    return {
        "wall_s": round(wall, 3), "forecasts": len(results), "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 2), "forecasts_per_s": round(len(results) / wall, 4),
        "mean_tokens": round(tokens / len(results), 1),
        "mean_ttft_s": round(fmean(r["ttft_s"] for r in results), 3),
        "parsed_by_line": sum(r["parsed_by_line"] for r in results),
    }


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    wall = sum(r["wall_s"] for r in rounds)
    tokens = sum(r["tokens"] for r in rounds)
    n = sum(r["forecasts"] for r in rounds)
    return {"tokens_per_s": round(tokens / wall, 2), "forecasts_per_s": round(n / wall, 4),
            "mean_tokens": round(tokens / n, 1), "parsed_by_line": sum(r["parsed_by_line"] for r in rounds),
            "forecasts": n, "mean_ttft_s": round(fmean(r["mean_ttft_s"] for r in rounds), 3)}


def shaped_adapter(model_dir: Path, dest: Path, rank: int = 8) -> Path:
    """A random rank-``rank`` peft LoRA on q/k/v/o for the checkpoint shape in ``model_dir``,
    written from the config alone (no base weights needed)."""
    import json

    import torch
    from safetensors.torch import save_file

    if (dest / "adapter_model.safetensors").exists():
        return dest
    cfg = json.loads((model_dir / "config.json").read_text())
    d, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or d // heads
    outs = {"q_proj": heads * hd, "k_proj": kv * hd, "v_proj": kv * hd, "o_proj": d}
    ins = {"q_proj": d, "k_proj": d, "v_proj": d, "o_proj": heads * hd}
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for layer in range(cfg["num_hidden_layers"]):
        for m in outs:
            key = f"base_model.model.model.layers.{layer}.self_attn.{m}"
            tensors[f"{key}.lora_A.weight"] = (torch.randn(rank, ins[m], generator=g) * 0.01).to(torch.bfloat16)
            tensors[f"{key}.lora_B.weight"] = (torch.randn(outs[m], rank, generator=g) * 0.01).to(torch.bfloat16)
    dest.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest / "adapter_model.safetensors"))
    (dest / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank,
        "lora_dropout": 0.0, "target_modules": list(outs), "bias": "none",
        "base_model_name_or_path": str(model_dir), "fan_in_fan_out": False,
    }))
    return dest


async def bench_base(base: str, args: argparse.Namespace, model: str, adapter: Path) -> dict[str, Any]:
    fmt = BASES[base]
    extra: dict[str, Any] = {}
    if args.shape == "8b":
        from forecast.basemodels import materialize_8b_shape

        model_dir = materialize_8b_shape(args.work / "models" / base, base)
        model, adapter = str(model_dir), shaped_adapter(model_dir, args.work / "adapters" / base)
        extra = {"load_format": "dummy", "gpu_memory_utilization": args.gpu_memory_utilization}
    else:
        extra = {"kv_cache_gib": args.kv_cache_gib}
    spec = EngineSettings(
        base=base, model=model, dtype=args.dtype, enforce_eager=args.eager, max_model_len=args.max_model_len,
        max_num_seqs=max(args.n, 1), max_loras=1, max_lora_rank=8, structured_output_backend=args.backend,
        mask_fill_threads=args.mask_fill_threads, **extra,
    )
    engine = VLLMEngine.start(spec)
    try:
        lora = LoraRef(name="bench@v1", lora_id=1, path=adapter)
        await engine.add_lora(lora)
        batch = prompts(args.n, fmt)
        eos = (SPECS[fmt].eos,)
        modes = {
            "free": GenerationParams(max_tokens=args.max_tokens, stop=eos),
            "structured": GenerationParams(  # what the forecaster sends (service.forecaster)
                max_tokens=args.max_tokens, stop=eos, regex=answer_regex(fmt, LIMITS.fitting(args.max_tokens, fmt))
            ),
        }
        if args.uncounted:
            modes["uncounted"] = GenerationParams(max_tokens=args.max_tokens, stop=eos, regex=uncounted(modes["structured"].regex))
        warmup = {}
        for mode, params in modes.items():  # first use of the expression compiles it
            t = time.perf_counter()
            await one(engine, batch[0], params, lora, f"warm-{mode}")
            warmup[mode] = round(time.perf_counter() - t, 3)
        rounds: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for r in range(args.rounds):
            for mode, params in modes.items():
                rounds[mode].append(await round_of(engine, batch, params, lora, f"{mode}-{r}"))
                print(base, mode, r, rounds[mode][-1], flush=True)
        free, structured = summary(rounds["free"]), summary(rounds["structured"])
        out = {
            "chat_format": fmt.value, "limits": vars(LIMITS.fitting(args.max_tokens, fmt)),
            "mask_fill_threads": args.mask_fill_threads,
            "warmup_request_s": warmup, "rounds": rounds, "free": free, "structured": structured,
            "structured_vs_free": {
                "tokens_per_s": round(structured["tokens_per_s"] / free["tokens_per_s"], 3),
                "forecasts_per_s": round(structured["forecasts_per_s"] / free["forecasts_per_s"], 3),
            },
        }
        if "uncounted" in rounds:
            out["uncounted"] = un = summary(rounds["uncounted"])
            out["uncounted_vs_free"] = {"tokens_per_s": round(un["tokens_per_s"] / free["tokens_per_s"], 3)}
        return out
    finally:
        await engine.aclose()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tiny = args.shape == "tiny" and not args.model
    model = args.model or (str(tiny_model()) if tiny else "")
    adapter = random_adapter(8) if args.shape == "tiny" else Path()
    described = {"tiny": "SmolLM2-135M-Instruct (tiny stand-in)", "8b": "8B shapes, random weights (load_format=dummy)"}
    out = {"benchmark": "structured_output", "machine": machine(), "config": {
        "model": args.model or described[args.shape], "n": args.n,
        "max_tokens": args.max_tokens, "rounds": args.rounds, "dtype": args.dtype, "adapter": "random rank-8 LoRA",
        "backend": f"vLLM structured output, regex, backend {args.backend}",
        "mask_fill_threads": args.mask_fill_threads,
        "vllm": vllm_version(),
        "command": "python benchmarks/structured_output.py " + " ".join(sys.argv[1:]),
    }, "bases": {}}
    for base in args.bases:
        out["bases"][base] = await bench_base(base, args, model, adapter)
        write_result(args.name, out)  # each base as it completes: a cut-off run keeps what it measured
    return out


def uncounted(regex: str | None) -> str:
    """The expression with every counted repeat ``{0,n}`` / ``{1,n}`` made ``*`` / ``+``."""
    assert regex is not None
    return re.sub(r"\{1,\d+\}", "+", re.sub(r"\{0,\d+\}", "*", regex))


def vllm_version() -> str:
    import vllm

    return str(vllm.__version__)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=384)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--bases", nargs="+", default=list(BASES), choices=list(BASES))
    p.add_argument("--model", default=None)
    p.add_argument("--dtype", default=cpu_dtype())
    p.add_argument("--eager", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--kv-cache-gib", type=int, default=2)
    p.add_argument("--name", default="structured_output")
    p.add_argument("--shape", choices=["tiny", "8b"], default="tiny")
    p.add_argument("--work", type=Path, default=ROOT / "var" / "bench")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--backend", choices=["auto", "xgrammar", "guidance"], default="auto")
    p.add_argument("--mask-fill-threads", type=int, default=None, help="default: the engine's (half the cores, <= 8)")
    p.add_argument("--uncounted", action="store_true", help="also the expression without counted repeats")
    args = p.parse_args()
    if args.shape == "8b":
        args.eager = False if args.eager is True and "--eager" not in sys.argv else args.eager
        args.dtype = "bfloat16" if "--dtype" not in sys.argv else args.dtype
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
    result = asyncio.run(main_async(args))
    path = write_result(args.name, result)
    for base, r in result["bases"].items():
        print(base, "free", r["free"], "\n", base, "structured", r["structured"], "\n", base, r["structured_vs_free"])
    print("wrote", path)


if __name__ == "__main__":
    main()
