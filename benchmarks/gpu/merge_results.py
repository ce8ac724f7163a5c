#!/usr/bin/env python3
"""Merge the raw JSON that the device calls wrote into benchmarks/results/gpu_train.json and
gpu_vllm.json (+ gpu_train.png when matplotlib is importable).

  python benchmarks/gpu/merge_results.py --train RUN1/gpu_train.json RUN2/gpu_train_compile.json \
      --vllm P1/gpu_vllm_p1.json P2/gpu_vllm_p2.json P3/gpu_vllm_p3.json --out benchmarks/results
  python benchmarks/gpu/merge_results.py --vllm-tuned C3/tuned_c3.json C4/tuned_c4.json C5/tuned_c5.json \
      --vllm-extra notes.json --out benchmarks/results      # -> gpu_vllm_tuned.json
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


ROWS = ("batch1", "concurrent16", "concurrent64")
GOALS = {"batch1_tok_per_s": 150, "concurrent64_tok_per_s_bf16": 4000, "lora_time_overhead_max": 0.10}


def merge_vllm_tuned(paths, out_dir, extra):
    """Serving-option variants (vllm_throughput.py KIND@VARIANT phases), one entry per device call.

    Ratios are only formed inside one call (async on/off) or inside one engine (LoRA request vs base request);
    anything across calls is labelled as such."""
    calls, rows = [], []
    for p in paths:
        r = json.loads(Path(p).read_text())
        phases = {}
        for name, ph in r["phases"].items():
            ph = {k: v for k, v in ph.items() if k != "traceback"}
            phases[name] = ph
            if not ph.get("ok"):
                rows.append({"call": Path(p).name, "phase": name, "ok": False, "error": ph.get("error"),
                             "phase_wall_s": ph.get("phase_wall_s")})
                continue
            for mode in ("base", "lora"):
                if not ph.get(mode):
                    continue
                row = {"call": Path(p).name, "phase": name, "requests": mode, "ok": True, "gpu": ph["gpu"],
                       "variant_kwargs": ph.get("variant_kwargs"), "variant_env": ph.get("variant_env"),
                       "resolved_async_scheduling": ph["resolved"].get("async_scheduling"),
                       "resolved_max_num_batched_tokens": ph["resolved"].get("max_num_batched_tokens"),
                       "engine_init_s": ph.get("engine_init_s")}
                for k in ROWS:
                    row[f"{k}_tok_per_s"] = ph[mode][k]["output_tok_per_s"]
                    row[f"{k}_runs_s"] = ph[mode][k]["runs_s"]
                row["batch1_decode_tok_per_s"] = ph[mode]["batch1"]["decode_tok_per_s"]
                row["batch1_ttft_s"] = ph[mode]["batch1"]["ttft_s"]
                if mode == "lora":
                    row["lora_time_ratio_vs_base_requests_same_engine"] = {
                        k: ph["lora"][k]["elapsed_s"] / ph["base"][k]["elapsed_s"] for k in ROWS}
                rows.append(row)
        calls.append({"file": Path(p).name, "note": r.get("note"), "gpu_nvidia_smi": r.get("gpu_nvidia_smi"),
                      "reps": r.get("reps"), "warmup_concurrent": r.get("warmup_concurrent"),
                      "elapsed_s": r.get("elapsed_s"), "phases": phases})
    ok = [x for x in rows if x.get("ok")]
    first_ok = next(ph for c in calls for ph in c["phases"].values() if ph.get("ok"))

    def find(phase, mode="base"):
        return next((x for x in ok if x["phase"] == phase and x["requests"] == mode), None)

    ratios = {}
    on, off = find("vllm_base@async"), find("vllm_base@noasync")
    if on and off and on["call"] == off["call"]:
        ratios["async_on_over_off_same_call"] = {k: on[f"{k}_tok_per_s"] / off[f"{k}_tok_per_s"] for k in ROWS}
    for name in ("vllm_base@mbt2048", "vllm_base@mbt4096", "vllm_base@mbt8192", "vllm_base@mbt32768"):
        v = find(name)
        if v and on:
            key = f"{name.split('@')[1]}_over_async_default_mbt16384" + (
                "_same_call" if v["call"] == on["call"] else f"_across_calls({v['call']} vs {on['call']})")
            ratios[key] = {k: v[f"{k}_tok_per_s"] / on[f"{k}_tok_per_s"] for k in ROWS}
    for x in ok:
        if x["requests"] == "lora":
            ratios[f"lora_time_ratio_{x['phase']}_same_engine"] = x["lora_time_ratio_vs_base_requests_same_engine"]
    bf16_base = [x for x in ok if x["requests"] == "base" and x["phase"].startswith("vllm_base")]
    best_b1 = max(bf16_base, key=lambda x: x["batch1_tok_per_s"])
    best_c64 = max(bf16_base, key=lambda x: x["concurrent64_tok_per_s"])
    lora_ratios = [v for k, v in ratios.items() if k.startswith("lora_time_ratio")]
    best_lora = min(lora_ratios, key=lambda v: max(v.values())) if lora_ratios else None
    summary = {
        "gpu": first_ok["gpu"], "vllm": first_ok["vllm"], "torch": first_ok["torch"],
        "goals": GOALS,
        "best_batch1": {"phase": best_b1["phase"], "tok_per_s": best_b1["batch1_tok_per_s"],
                        "met": best_b1["batch1_tok_per_s"] >= GOALS["batch1_tok_per_s"]},
        "best_concurrent64_bf16": {"phase": best_c64["phase"], "tok_per_s": best_c64["concurrent64_tok_per_s"],
                                   "met": best_c64["concurrent64_tok_per_s"] >= GOALS["concurrent64_tok_per_s_bf16"]},
        "best_lora_time_ratio": best_lora,
        "lora_goal_met": bool(best_lora) and max(best_lora.values()) - 1 <= GOALS["lora_time_overhead_max"],
        "ratios": ratios,
    }
    res = {"benchmark": "vLLM serving options, Llama-3.1-8B-shaped dummy weights, 1500 in / 256 out, ignore_eos, "
                        "greedy, bf16 (batch 1 = median of 3 end-to-end runs, prefill included; concurrent = best "
                        "of --reps runs)",
           "summary": summary, "rows": rows, "calls": calls}
    res.update(extra)
    with open(os.path.join(out_dir, "gpu_vllm_tuned.json"), "w") as f:
        json.dump(res, f, indent=1)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", nargs="*", default=[])
    ap.add_argument("--vllm", nargs="*", default=[])
    ap.add_argument("--vllm-tuned", nargs="*", default=[], help="vllm_throughput.py outputs with KIND@VARIANT phases")
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
    if a.vllm_tuned:
        extra = json.loads(Path(a.vllm_extra).read_text()) if a.vllm_extra else {}
        r = merge_vllm_tuned(a.vllm_tuned, a.out, extra)
        print(json.dumps(r["summary"], indent=1))


if __name__ == "__main__":
    main()
