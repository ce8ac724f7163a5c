#!/usr/bin/env python3
"""Train a LoRA adapter for each 8B base on one GPU with the project's own training command
under the deepspeed launcher, and write servable adapter versions (v1, v2) with manifests.

    python benchmarks/gpu/product_train.py --root /tmp/product --out $OUT/train.json --max-steps 8

For each base: materialize the 8B-shaped checkpoint (config + the real Llama-3 tokenizer, no
weights: the model is built with random weights on the GPU), run

    python -m training.finetune --config training/configs/gpu_8b.json --base BASE \\
        --random-init-config DIR/config.json --tokenizer DIR --max-steps N --save-steps N/2

(which re-executes itself under ``deepspeed``), then copy the two checkpoints into
``ROOT/adapters/fingpt-BASE/{v1,v2}`` with ``training.manifest.write_adapter``. Throughput is
read from the run's ``train_log.json`` (cuda-synchronized per-step times, tokens per step):
samples/s in 4,096-token equivalents over the steps after the compile warm-up, and MFU by LoRA
FLOPs against the dense-bf16 datasheet peak. Measures only; nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

PEAK_BF16 = 989e12  # H100/H200 SXM dense bf16 datasheet (same for both cards)


def lora_flops_per_token(cfg: dict[str, Any], seq: int, r: int, targets: int = 4) -> float:
    """Forward + backward FLOPs per token of a LoRA step on a frozen Llama: 4·N_mm (frozen
    matmuls get input grads only) + 6·N_lora + attention 6·s·d·L (NOTES.md's count, so the
    figures compare; packed rows attend within each example, so this overstates their work)."""
    d, ff, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // heads
    attn = d * heads * hd + 2 * d * kv * hd + heads * hd * d
    n_mm = layers * (attn + 3 * d * ff) + cfg["vocab_size"] * d  # lm_head, not the embedding
    kv_out = kv * hd
    n_lora = layers * r * ((d + d) + (d + kv_out) * 2 + (d + d)) if targets == 4 else 0
    return 4 * n_mm + 6 * n_lora + 6 * seq * d * layers


def throughput(log: dict[str, Any], cfg: dict[str, Any], warmup: int) -> dict[str, Any]:
    steps = log.get("step_times") or []
    measured = steps[warmup:]
    if not measured:
        return {"steps": len(steps), "note": "no measured steps"}
    secs = sum(s["seconds"] for s in measured)
    tokens = sum(s["tokens"] for s in measured)
    samples = sum(s.get("examples", 0) for s in measured)
    seq = 4096
    flops = lora_flops_per_token(cfg, seq, 8) * tokens
    return {
        "steps_total": len(steps), "steps_measured": len(measured), "seconds": secs,
        "tokens": tokens, "tokens_per_s": tokens / secs,
        "samples_4096_equiv_per_s": tokens / seq / secs,
        "real_examples_per_s": samples / secs if samples else None,
        "mfu_lora": flops / secs / PEAK_BF16,
        "first_step_s": steps[0]["seconds"] if steps else None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/product"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--bases", default="llama,deepseek")
    p.add_argument("--max-steps", type=int, default=8)
    p.add_argument("--warmup-steps", type=int, default=3, help="optimizer steps left out (compile)")
    p.add_argument("--config", default="training/configs/gpu_8b.json")
    p.add_argument("--smoke", action="store_true",
                   help="CPU rehearsal: a tiny random Llama with the real tokenizer, few rows")
    args = p.parse_args()
    from forecast.basemodels import materialize_8b_shape, materialize_tiny_llama3
    from training.config import run_from_dict
    from training.manifest import write_adapter

    result: dict[str, Any] = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d")}
    try:
        import torch

        result["card"] = torch.cuda.get_device_name(0)
    except Exception as exc:  # measured anyway; the card is named when there is one
        result["card"] = f"unknown ({exc})"
    for base in args.bases.split(","):
        shape = materialize_tiny_llama3 if args.smoke else materialize_8b_shape
        model_dir = shape(args.root / "models" / base, base)
        run_dir = args.root / "runs" / base
        half = max(1, args.max_steps // 2)
        cmd = [
            sys.executable, "-m", "training.finetune", "--config", args.config, "--base", base,
            "--random-init-config", str(model_dir / "config.json"), "--tokenizer", str(model_dir),
            "--max-steps", str(args.max_steps), "--save-steps", str(half), "--run-dir", str(run_dir),
        ]
        if args.smoke:
            smoke_cfg = args.root / "smoke_config.json"
            raw_cfg = json.loads(Path(args.config).read_text())
            raw_cfg["data"] = {**raw_cfg.get("data", {}), "train_rows": 8, "eval_rows": 2, "max_length": 4096}
            raw_cfg["train"] = {**raw_cfg["train"], "bf16": False, "torch_compile": False}
            smoke_cfg.write_text(json.dumps(raw_cfg))
            cmd[cmd.index(args.config)] = str(smoke_cfg)
        t0 = time.perf_counter()
        with open(args.out.parent / f"train_{base}.log", "w") as logf:
            rc = subprocess.run(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - t0
        entry: dict[str, Any] = {"command": " ".join(cmd), "rc": rc, "wall_s": wall}
        print(f"{base}: rc={rc} in {wall:.0f}s", flush=True)
        log_path = run_dir / "train_log.json"
        if rc == 0 and log_path.exists():
            log = json.loads(log_path.read_text())
            cfg = json.loads((model_dir / "config.json").read_text())
            entry["throughput"] = throughput(log, cfg, args.warmup_steps)
            entry["losses"] = [h["loss"] for h in log["log_history"] if "loss" in h]
            entry["data"] = json.loads((run_dir / "data.json").read_text()) if (run_dir / "data.json").exists() else None
            if entry["data"]:
                for k in ("train_keys", "eval_keys"):
                    entry["data"][k] = len(entry["data"][k])
            raw = json.loads(Path(args.config).read_text())
            raw.pop("_comment", None)
            raw.update({"base": base, "random_init_config": str(model_dir / "config.json"),
                        "tokenizer": str(model_dir)})
            run = run_from_dict(raw)
            window = json.loads((run_dir / "data.json").read_text())["window"]
            written = []
            for version, step in (("v1", half), ("v2", args.max_steps)):
                ckpt = run_dir / f"checkpoint-{step}"
                train_loss = next((h["loss"] for h in reversed(log["log_history"])
                                   if "loss" in h and h.get("step", 0) <= step), None)
                dest = args.root / "adapters" / run.adapter_name / version
                if not dest.exists():
                    write_adapter(ckpt, run, window, {"step": step, "checkpoint": ckpt.name,
                                                      "train_loss": train_loss},
                                  args.root / "adapters", version)
                written.append(str(dest))
            entry["adapters"] = written
            entry["manifest_v2"] = json.loads((dest / "adapter.json").read_text())
        result[base] = entry
        args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({b: result[b].get("throughput") for b in args.bases.split(",")}, indent=1))
    return 0 if all(result[b]["rc"] == 0 for b in args.bases.split(",")) else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
