#!/usr/bin/env python3
"""Merge the GPU run's JSONs (``product_train.py``, ``product_serve.py``) into one result and
draw it, here on the CPU machine:

    python benchmarks/gpu/product_report.py --train <call>/train.json --serve <call>/serve.json \\
        --out benchmarks/results/gpu_product.json

Writes ``gpu_product.json`` (every figure, the goals beside them, commands, card, versions)
and ``gpu_product.png`` (service vs raw AsyncLLM output tokens/s at 1/16/64 concurrent, and
the batch-1 decode rate against the bandwidth floor). Ratios are only between figures of the
same call. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

GOALS = {
    "service_vs_raw_tokens_per_s_c16_c64": ">= 0.95",
    "batch1_latency_vs_raw": "<= 1.05",
    "batch1_decode_vs_bandwidth_floor": ">= 0.85",
    "hot_swap_first_token_after_admin_return_s": "< 1 (0 failed, re-weight visible in /metrics)",
    "train_samples_4096_equiv_per_s": ">= 3.8 (>= 52 % MFU by LoRA FLOPs)",
    "dow30_both_bases_wall_s": "<= 10",
}


def strip(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def merge(train: dict[str, Any], serve: dict[str, Any], extra_train: list[dict[str, Any]]) -> dict[str, Any]:
    svc, raw = serve["service"], serve["raw"]
    conc = [c for c in (1, 16, 64) if f"c{c}" in svc]
    rows = {
        f"c{c}": {"service": strip(svc[f"c{c}"]), "raw_asyncllm": raw[f"c{c}"],
                  "tokens_per_s_ratio": svc[f"c{c}"]["output_tokens_per_s"] / raw[f"c{c}"]["output_tokens_per_s"],
                  "latency_p50_ratio": svc[f"c{c}"]["latency_p50_s"] / raw[f"c{c}"]["latency_p50_s"]}
        for c in conc
    }
    floor = serve["ceilings"]["batch1_floor_tokens_per_s"]
    batch = svc["dow30_both_bases"]
    trained = {b: train[b] for b in ("llama", "deepseek") if b in train}
    measured = {
        "service_vs_raw_tokens_per_s": {k: v["tokens_per_s_ratio"] for k, v in rows.items()},
        "batch1_latency_vs_raw": rows["c1"]["latency_p50_ratio"],
        "batch1_decode_vs_bandwidth_floor": {
            "service": svc["c1"]["decode_tokens_per_s_p50"] / floor,
            "raw_asyncllm": raw["c1"]["decode_tokens_per_s_p50"] / floor,
        },
        "hot_swap": {
            "probe": svc.get("swap_probe"),
            "closed_loop": svc["swap"]["swap_effects"],
            "failed_requests": svc["swap"]["totals"]["errors"],
            "metrics_after": svc["metrics_excerpt"],
        },
        "train_samples_4096_equiv_per_s": {b: t["throughput"]["samples_4096_equiv_per_s"] for b, t in trained.items()},
        "train_mfu_lora": {b: t["throughput"]["mfu_lora"] for b, t in trained.items()},
        "dow30_both_bases_wall_s": batch["wall_s"],
        "engine_start_s": {
            "service_ready_s": serve["service_ready_s"],
            "per_engine": [m for m in svc["metrics_excerpt"] if m.startswith("forecast_engine_start")],
            "raw_asyncllm_s": raw["engine_start_s"],
        },
    }
    return {
        "card": serve["card"], "date": serve["date"], "versions": serve["versions"],
        "goals": GOALS, "measured": measured,
        "ceilings": serve["ceilings"], "engines": serve["engines"],
        "raw_engine_kwargs": raw.get("engine_kwargs"),
        "load": rows, "raw_warmup": raw.get("warmup"),
        "dow30_both_bases": {k: v for k, v in batch.items() if k != "per_base"}
        | {"per_base": {b: {k: v for k, v in p.items() if k != "example"} for b, p in batch["per_base"].items()}},
        "dow30_example_forecast": batch["per_base"]["fingpt-llama"].get("example"),
        "swap": svc["swap"], "swap_probe": svc.get("swap_probe"),
        "readyz": [svc["readyz"], svc["readyz_after"]],
        "prompt_tokens": serve.get("prompt_tokens"),
        "train": train, "train_other_calls": extra_train,
        "commands": {"serve": serve["command"], "train": train["command"]},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["load"]
    names = list(rows)
    svc = [rows[n]["service"]["output_tokens_per_s"] for n in names]
    raw = [rows[n]["raw_asyncllm"]["output_tokens_per_s"] for n in names]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = range(len(names))
    a.bar([i - 0.2 for i in x], svc, 0.4, label="service (HTTP, both engines up)")
    a.bar([i + 0.2 for i in x], raw, 0.4, label="raw AsyncLLM, same settings")
    for i, n in enumerate(names):
        a.text(i, max(svc[i], raw[i]) * 1.02, f"{rows[n]['tokens_per_s_ratio']:.2f}x", ha="center")
    a.set_xticks(list(x), [f"{n[1:]} concurrent" for n in names])
    a.set_ylabel("output tokens/s (LoRA r8, 512 out)")
    a.set_yscale("log")
    a.legend(fontsize=8)
    a.set_title("Forecasts through the service vs raw vLLM")
    m = result["measured"]["batch1_decode_vs_bandwidth_floor"]
    floor = result["ceilings"]["batch1_floor_tokens_per_s"]
    b.bar(["floor\n(weights / copy BW)", "service", "raw AsyncLLM"],
          [floor, m["service"] * floor, m["raw_asyncllm"] * floor], color=["grey", "C0", "C1"])
    b.set_ylabel("batch-1 decode tokens/s")
    b.set_title("Batch-1 decode vs bandwidth floor")
    fig.suptitle(f"{result['card']}, 8B shape bf16, vLLM {result['versions']['vllm']}, {result['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--serve", type=Path, required=True)
    p.add_argument("--train-extra", type=Path, nargs="*", default=[])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    result = merge(json.loads(args.train.read_text()), json.loads(args.serve.read_text()),
                   [json.loads(t.read_text()) for t in args.train_extra])
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    m = result["measured"]
    print(f"{result['card']} {result['date']}")
    for k, v in m.items():
        print(f"  {k}: {json.dumps(v, default=str)[:200]}   goal {GOALS.get(k, '')}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
