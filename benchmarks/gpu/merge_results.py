#!/usr/bin/env python3
"""Merge the raw JSON that the device calls wrote into benchmarks/results/gpu_train.json and
gpu_vllm.json (+ gpu_train.png when matplotlib is importable).

  python benchmarks/gpu/merge_results.py --train RUN1/gpu_train.json RUN2/gpu_train_compile.json \
      --vllm P1/gpu_vllm_p1.json P2/gpu_vllm_p2.json P3/gpu_vllm_p3.json --out benchmarks/results
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def merge_train(paths, out_dir):
    runs = [json.loads(Path(p).read_text()) for p in paths]
    res = dict(runs[0])
    res["variants"] = []
    res["calls"] = []
    for i, r in enumerate(runs):
        res["calls"].append({k: r.get(k) for k in ("gpu", "measured_gemm_tflops", "measured_copy_TBps", "model_build_s",
                                                    "elapsed_s", "packing_check")})
        for v in r["variants"]:
            if v.get("error", "").startswith("skipped"):
                continue
            v = dict(v, call=i + 1)
            v.pop("traceback", None)
            res["variants"].append(v)
    ok = [v for v in res["variants"] if v.get("ok")]
    fixed = [v for v in ok if v.get("data") == "fixed"]
    best = max(fixed, key=lambda v: v["samples_per_s"])
    base = next(v for v in ok if v["name"] == "baseline_eager_fullgc_mb1")
    res["summary"] = {
        "gpu": res["gpu"],
        "baseline_samples_per_s": base["samples_per_s"],
        "best_fixed_4096_variant": best["name"],
        "best_samples_per_s": best["samples_per_s"],
        "best_mfu_lora_model_flops": best["mfu_lora_model_flops"],
        "best_mfu_conventional_6N": best["mfu_conventional_6N"],
        "speedup_vs_measured_baseline": best["samples_per_s"] / base["samples_per_s"],
        "speedup_vs_anchor_1.35": best["samples_per_s"] / 1.35,
        "target_2.2_met": best["samples_per_s"] >= 2.2,
    }
    packed = [v for v in ok if v.get("data") == "packed"]
    if packed:
        bp = max(packed, key=lambda v: v["samples_per_s"])
        res["summary"]["best_packed_variant"] = bp["name"]
        res["summary"]["best_packed_real_samples_per_s"] = bp["samples_per_s"]
        res["summary"]["best_packed_tokens_per_s"] = bp["tokens_per_s"]
    with open(os.path.join(out_dir, "gpu_train.json"), "w") as f:
        json.dump(res, f, indent=1)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [v["name"] for v in ok]
        vals = [v["samples_per_s_4096_equiv"] for v in ok]
        fig, ax = plt.subplots(figsize=(9, 0.32 * len(names) + 1.2))
        ax.barh(range(len(names)), vals, color=["tab:orange" if v.get("compile") else "tab:blue" for v in ok])
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.35, color="grey", ls=":", label="anchor 1.35")
        ax.axvline(2.2, color="red", ls="--", label="target 2.2")
        ax.set_xlabel("4096-token samples/s (tokens/s / 4096)")
        ax.set_title(f"LoRA r8 training, Llama-3.1-8B shape, {res['gpu']} (orange: torch.compile)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "gpu_train.png"), dpi=110)
    except Exception as e:
        print("no png:", e)
    return res


def merge_vllm(paths, out_dir, extra):
    res = None
    for p in paths:
        r = json.loads(Path(p).read_text())
        if res is None:
            res = dict(r)
            res["phases"] = {}
        for k, v in r["phases"].items():
            if v.get("ok") or k not in res["phases"]:
                res["phases"][k] = v
    res.update(extra)
    ph = res["phases"]
    a1 = ph["anchor"]["batch1"]["output_tok_per_s"]
    a16 = ph["anchor"]["batch16"]["output_tok_per_s"]
    b = ph["vllm_base"]["base"]
    lo = ph["vllm_lora"]
    f8 = ph.get("vllm_fp8", {}).get("base")
    s = {
        "gpu": ph["vllm_base"]["gpu"],
        "vllm": ph["vllm_base"]["vllm"],
        "anchor_transformers_batch1_tok_per_s": a1,
        "anchor_transformers_batch16_tok_per_s": a16,
        "vllm_bf16_batch1_tok_per_s": b["batch1"]["output_tok_per_s"],
        "vllm_bf16_batch1_decode_tok_per_s": b["batch1"]["decode_tok_per_s"],
        "vllm_bf16_concurrent16_tok_per_s": b["concurrent16"]["output_tok_per_s"],
        "vllm_bf16_concurrent64_tok_per_s": b["concurrent64"]["output_tok_per_s"],
        "vllm_bf16_concurrent64_total_tok_per_s_incl_prompt": b["concurrent64"]["total_tok_per_s_incl_prompt"],
        "concurrent16_vs_measured_anchor_batch16": b["concurrent16"]["output_tok_per_s"] / a16,
        "concurrent16_vs_reported_anchor_182": b["concurrent16"]["output_tok_per_s"] / 182,
    }
    for k in ("batch1", "concurrent16", "concurrent64"):
        s[f"lora_tok_per_s_{k}"] = lo["lora"][k]["output_tok_per_s"]
        s[f"lora_overhead_{k}_vs_bf16_engine"] = b[k]["output_tok_per_s"] / lo["lora"][k]["output_tok_per_s"] - 1
        s[f"enable_lora_no_adapter_overhead_{k}"] = b[k]["output_tok_per_s"] / lo["base"][k]["output_tok_per_s"] - 1
    if f8:
        for k in ("batch1", "concurrent16", "concurrent64"):
            s[f"fp8_w_kv_tok_per_s_{k}"] = f8[k]["output_tok_per_s"]
    s["goals"] = {
        "batch1_ge_150": s["vllm_bf16_batch1_tok_per_s"] >= 150,
        "concurrent16_ge_10x_anchor(measured anchor)": s["concurrent16_vs_measured_anchor_batch16"] >= 10,
        "concurrent16_ge_10x_anchor(reported 182)": s["concurrent16_vs_reported_anchor_182"] >= 10,
        "concurrent64_ge_4000": s["vllm_bf16_concurrent64_tok_per_s"] >= 4000,
        "lora_overhead_le_10pct": max(s[f"lora_overhead_{k}_vs_bf16_engine"] for k in ("batch1", "concurrent16", "concurrent64")) <= 0.10,
        "fp8_concurrent64_ge_4000": bool(f8) and f8["concurrent64"]["output_tok_per_s"] >= 4000,
        "fp8_batch1_ge_150": bool(f8) and f8["batch1"]["output_tok_per_s"] >= 150,
    }
    res["summary"] = s
    for k in ("note",):
        res.pop(k, None)
    with open(os.path.join(out_dir, "gpu_vllm.json"), "w") as f:
        json.dump(res, f, indent=1)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", nargs="*", default=[])
    ap.add_argument("--vllm", nargs="*", default=[])
    ap.add_argument("--vllm-extra", default=None, help="JSON file with install/floor notes to add")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    if a.train:
        r = merge_train(a.train, a.out)
        print(json.dumps(r["summary"], indent=1))
    if a.vllm:
        extra = json.loads(Path(a.vllm_extra).read_text()) if a.vllm_extra else {}
        r = merge_vllm(a.vllm, a.out, extra)
        print(json.dumps(r["summary"], indent=1))


if __name__ == "__main__":
    main()
