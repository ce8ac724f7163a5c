#!/usr/bin/env python3
"""vLLM serving throughput for a Llama-3.1-8B-shaped model with dummy (random) weights, plus the
transformers ``generate`` anchors, on one GPU.

Workload: 1,500 random prompt tokens in, 256 tokens out (ignore_eos), greedy, bf16.
Rows: batch 1 (output tok/s of one request), 16 and 64 concurrent requests (aggregate output
tok/s), each with and without a rank-8 LoRA adapter (random, written with peft).

Phases run as subprocesses so each engine gets a clean GPU:
  anchor      transformers generate, batch 1 and 16 (sdpa, bf16, random weights)
  vllm_base   vLLM engine without LoRA
  vllm_lora   vLLM engine with enable_lora (requests with and without the adapter)
  vllm_fp8    (optional) online fp8 weights + fp8 KV cache, base requests

Serving-option variants: a phase name may carry a suffix, ``vllm_base@NAME`` / ``vllm_lora@NAME``, where NAME
is a key of ``--variants`` (a JSON object, or ``@path`` to a JSON file): its value is a dict of extra
``LLM(...)`` keyword arguments, plus an optional ``"_env"`` dict of environment variables for that phase's
process (e.g. ``VLLM_LORA_ENABLE_DUAL_STREAM``). ``--engine-kwargs`` (JSON) is merged into every vLLM phase
first. The kwargs asked for and the scheduler settings vLLM resolved are recorded per phase. Ratios in the
summary are only between phases of the same call (same machine, same run).

Usage (device, vLLM importable):  python benchmarks/gpu/vllm_throughput.py --out $OUT/gpu_vllm.json
No timing assertions: this only measures and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

PROMPT_LEN = 1500
OUT_LEN = 256

LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "max_position_embeddings": 131072,
    "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "hidden_act": "silu", "tie_word_embeddings": False,
    "attention_bias": False, "mlp_bias": False, "initializer_range": 0.02, "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16", "use_cache": True,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}


def log(*a):
    print(*a, flush=True)


def write_model_dir(d):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(LLAMA31_8B, f, indent=1)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "do_sample": False}, f)


def write_lora(d, model_dir, seed=0):
    """Random rank-8 LoRA (alpha 16, q/k/v/o) saved by peft from a meta-device base model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{k: v for k, v in LLAMA31_8B.items() if k not in ("architectures", "model_type")})
    with torch.device("meta"):
        base = LlamaForCausalLM(cfg)
    lcfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, bias="none", task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    pm = get_peft_model(base, lcfg)
    g = torch.Generator().manual_seed(seed)
    n = 0
    for _, mod in pm.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            for lin in (mod.lora_A["default"], mod.lora_B["default"]):
                w = torch.randn(lin.weight.shape, generator=g, dtype=torch.float32) * 0.02
                lin.weight = torch.nn.Parameter(w.to(torch.bfloat16))
                n += w.numel()
    pm.peft_config["default"].base_model_name_or_path = model_dir
    pm.save_pretrained(d)
    return n


def prompts(n, seed):
    import random

    r = random.Random(seed)
    return [[r.randrange(1000, 120000) for _ in range(PROMPT_LEN)] for _ in range(n)]


# ---------------------------------------------------------------------------- anchor
def phase_anchor(args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    res = {"gpu": torch.cuda.get_device_name(0), "what": "transformers generate, sdpa, bf16, greedy, DynamicCache"}
    cfg = LlamaConfig(**{k: v for k, v in LLAMA31_8B.items() if k not in ("architectures", "model_type")})
    cfg._attn_implementation = "sdpa"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.eval()
    P = torch.tensor(prompts(16, 1), device="cuda")
    gen = dict(do_sample=False, max_new_tokens=OUT_LEN, min_new_tokens=OUT_LEN, pad_token_id=0)
    with torch.no_grad():
        model.generate(P[:1, :64], do_sample=False, max_new_tokens=8, min_new_tokens=8, pad_token_id=0)
        for bs in (1, 16):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model.generate(P[:bs], attention_mask=torch.ones_like(P[:bs]), **gen)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            new = (out.shape[1] - PROMPT_LEN) * bs
            res[f"batch{bs}"] = {"elapsed_s": dt, "output_tokens": new, "output_tok_per_s": new / dt}
            log(f"anchor transformers batch {bs}: {new / dt:.1f} output tok/s ({dt:.1f}s)")
    return res


# ------------------------------------------------------------------------------ vllm
def _resolved_config(llm):
    """What vLLM resolved from the kwargs (async scheduling defaults to None -> decided at config time)."""
    out = {}
    try:
        vc = llm.llm_engine.vllm_config
        sc = vc.scheduler_config
        for k in ("async_scheduling", "max_num_batched_tokens", "max_num_seqs", "enable_chunked_prefill"):
            out[k] = getattr(sc, k, None)
        cc = vc.compilation_config
        out["cudagraph_mode"] = str(getattr(cc, "cudagraph_mode", None))
        out["cudagraph_specialize_lora"] = getattr(cc, "cudagraph_specialize_lora", None)
        out["max_cudagraph_capture_size"] = getattr(cc, "max_cudagraph_capture_size", None)
        out["performance_mode"] = str(getattr(vc, "performance_mode", None))
        if vc.lora_config is not None:
            out["lora_config"] = {k: str(getattr(vc.lora_config, k, None)) for k in
                                  ("max_lora_rank", "max_loras", "lora_dtype", "specialize_active_lora")}
    except Exception as e:  # only a record; never fail the phase for it
        out["error"] = repr(e)[:300]
    return out


def phase_vllm(args, lora, fp8=False):
    import torch
    from vllm import LLM, SamplingParams

    try:
        from vllm.inputs import TokensPrompt
    except Exception:
        TokensPrompt = dict
    import vllm
    from vllm.lora.request import LoRARequest

    res = {"gpu": torch.cuda.get_device_name(0), "vllm": vllm.__version__, "torch": torch.__version__, "lora_engine": lora}
    t0 = time.perf_counter()
    kw = dict(model=args.model_dir, load_format="dummy", dtype="bfloat16", skip_tokenizer_init=True,
              max_model_len=2048, max_num_seqs=64, gpu_memory_utilization=0.88, enable_prefix_caching=False,
              seed=0)
    if lora:
        kw.update(enable_lora=True, max_lora_rank=8, max_loras=1)
    if fp8:  # online fp8 weight quantization (per-tensor) + fp8 KV cache: a deployment option, not bf16
        kw.update(quantization="fp8", kv_cache_dtype="fp8")
    extra = json.loads(args.phase_kwargs or "{}")
    kw.update(extra)
    res["variant"] = args.variant
    res["variant_kwargs"] = extra
    res["variant_env"] = json.loads(args.phase_env or "{}")
    res["engine_kwargs"] = {k: v for k, v in kw.items() if k != "model"}
    llm = LLM(**kw)
    res["engine_init_s"] = time.perf_counter() - t0
    res["resolved"] = _resolved_config(llm)
    log(f"resolved: {res['resolved']}")
    log(f"engine (lora={lora}, fp8={fp8}) up in {res['engine_init_s']:.0f}s")
    sp = SamplingParams(temperature=0.0, max_tokens=OUT_LEN, ignore_eos=True, detokenize=False)
    sp1 = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True, detokenize=False)
    req = LoRARequest("fin_lora", 1, args.lora_dir) if lora else None

    def run(ps, params, lr):
        t = time.perf_counter()
        outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in ps], params, lora_request=lr, use_tqdm=False)
        dt = time.perf_counter() - t
        ntok = sum(len(o.outputs[0].token_ids) for o in outs)
        return dt, ntok

    # warm-up (also loads the adapter); --warmup-concurrent adds one short 16-request batch per request kind
    spw = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True, detokenize=False)
    run(prompts(2, 99), spw, None)
    if lora:
        run(prompts(2, 98), spw, req)
    if args.warmup_concurrent:
        run(prompts(16, 97), spw, None)
        if lora:
            run(prompts(16, 96), spw, req)
    modes = [("base", None)] + ([("lora", req)] if lora else [])
    seed = 1000
    for mname, lr in modes:
        rows = {}
        # batch 1: e2e output tok/s (prefill included), plus TTFT and decode-only rate
        ttfts = [run(prompts(1, seed + i), sp1, lr)[0] for i in range(3)]
        seed += 3
        e2e = []
        for _i in range(3):
            dt, nt = run(prompts(1, seed), sp, lr)
            seed += 1
            e2e.append((dt, nt))
        e2e.sort()
        dt, nt = e2e[1]
        ttft = sorted(ttfts)[1]
        rows["batch1"] = {"elapsed_s": dt, "output_tokens": nt, "output_tok_per_s": nt / dt, "ttft_s": ttft,
                          "decode_tok_per_s": (nt - 1) / max(1e-9, dt - ttft), "runs_s": [x[0] for x in e2e]}
        for conc in (16, 64):
            rs = []
            for _rep in range(args.reps):
                rs.append(run(prompts(conc, seed), sp, lr))
                seed += conc
            dt, nt = min(rs)
            rows[f"concurrent{conc}"] = {"elapsed_s": dt, "output_tokens": nt, "output_tok_per_s": nt / dt,
                                         "total_tok_per_s_incl_prompt": (nt + conc * PROMPT_LEN) / dt,
                                         "runs_s": [x[0] for x in rs]}
        res[mname] = rows
        log(f"vllm engine lora={lora} fp8={fp8} requests={mname}: b1 {rows['batch1']['output_tok_per_s']:.1f} tok/s "
            f"(decode {rows['batch1']['decode_tok_per_s']:.1f}, ttft {rows['batch1']['ttft_s']*1e3:.0f} ms), "
            f"c16 {rows['concurrent16']['output_tok_per_s']:.0f} tok/s, c64 {rows['concurrent64']['output_tok_per_s']:.0f} tok/s")
    return res


def child(args):
    kind, _, args.variant = args.phase.partition("@")
    try:
        if kind == "anchor":
            r = phase_anchor(args)
        elif kind == "vllm_base":
            r = phase_vllm(args, lora=False)
        elif kind == "vllm_lora":
            r = phase_vllm(args, lora=True)
        elif kind == "vllm_fp8":
            r = phase_vllm(args, lora=False, fp8=True)
        else:
            raise ValueError(args.phase)
        r["ok"] = True
    except Exception as e:
        r = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:1500]}", "traceback": traceback.format_exc()[-4000:]}
        log(r["traceback"])
    with open(args.phase_out, "w") as f:
        json.dump(r, f, indent=1)
    os._exit(0)  # do not wait on engine teardown


def _nvidia_smi():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:
        return repr(e)


def _kill_group(proc):
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        time.sleep(3)


def _wait_gpu_free(max_s=60, below_mib=3000):
    t = time.perf_counter()
    while time.perf_counter() - t < max_s:
        try:
            used = int(subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                      capture_output=True, text=True, timeout=30).stdout.split()[0])
        except Exception:
            return
        if used < below_mib:
            return
        time.sleep(2)
    log(f"GPU memory still in use after {max_s}s")


ROWS = ("batch1", "concurrent16", "concurrent64")


def variant_summary(ph):
    """Per-phase rows, LoRA/base time on the same engine, and each vllm_base* phase vs the first one of the call."""
    out = {"rows": {}, "lora_time_ratio_same_engine": {}, "vs_first_base_phase": {}}
    ref_name = next((n for n, r in ph.items() if n.startswith("vllm_base") and r.get("base")), None)
    for n, r in ph.items():
        if not n.startswith("vllm") or not r.get("base"):
            continue
        for mode in ("base", "lora"):
            if r.get(mode):
                out["rows"][f"{n}:{mode}"] = {k: round(r[mode][k]["output_tok_per_s"], 1) for k in ROWS if k in r[mode]}
        if r.get("lora"):
            out["lora_time_ratio_same_engine"][n] = {
                k: r["lora"][k]["elapsed_s"] / r["base"][k]["elapsed_s"] for k in ROWS if k in r["lora"]}
        if ref_name and n != ref_name:
            ref = ph[ref_name]["base"]
            out["vs_first_base_phase"][f"{n} / {ref_name}"] = {
                k: r["base"][k]["output_tok_per_s"] / ref[k]["output_tok_per_s"] for k in ROWS if k in r["base"]}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--phase", default="all")
    ap.add_argument("--phases", default="anchor,vllm_base,vllm_lora")
    ap.add_argument("--phase-out")
    ap.add_argument("--work", default="/tmp/vllm_bench")
    ap.add_argument("--model-dir")
    ap.add_argument("--lora-dir")
    ap.add_argument("--phase-timeout", type=int, default=240)
    ap.add_argument("--note", default="")
    ap.add_argument("--engine-kwargs", default="{}", help="JSON merged into LLM(...) kwargs of every vLLM phase")
    ap.add_argument("--variants", default="{}",
                    help='JSON (or @file): {"NAME": {LLM kwargs..., "_env": {VAR: value}}} for phases KIND@NAME')
    ap.add_argument("--reps", type=int, default=2, help="runs per concurrent row (best is reported)")
    ap.add_argument("--warmup-concurrent", action="store_true")
    ap.add_argument("--budget-s", type=float, default=0, help="whole-run deadline; phases get what is left")
    ap.add_argument("--min-phase-s", type=float, default=120, help="skip a phase when less than this is left")
    ap.add_argument("--phase-kwargs", default="{}")
    ap.add_argument("--phase-env", default="{}")
    args = ap.parse_args()
    args.model_dir = args.model_dir or os.path.join(args.work, "llama31-8b-dummy")
    args.lora_dir = args.lora_dir or os.path.join(args.work, "lora-r8")
    if args.phase != "all":
        child(args)
        return
    T0 = time.perf_counter()
    variants = json.loads(Path(args.variants[1:]).read_text() if args.variants.startswith("@") else args.variants)
    base_kw = json.loads(args.engine_kwargs)
    os.makedirs(args.work, exist_ok=True)
    write_model_dir(args.model_dir)
    result = {"benchmark": "vLLM serving, Llama-3.1-8B-shaped dummy weights, 1500 in / 256 out, ignore_eos, greedy, bf16",
              "prompt_len": PROMPT_LEN, "output_len": OUT_LEN, "note": args.note,
              "anchor_reported": {"transformers_batch16_tok_per_s": 182},
              "goals": {"batch1_tok_per_s": 150, "concurrent16_vs_anchor": 10, "concurrent64_tok_per_s": 4000,
                        "lora_overhead_max": 0.10},
              "engine_kwargs_all_phases": base_kw, "variants": variants, "reps": args.reps,
              "warmup_concurrent": args.warmup_concurrent, "gpu_nvidia_smi": _nvidia_smi(), "phases": {}}
    try:
        result["lora_params"] = write_lora(args.lora_dir, args.model_dir)
    except Exception as e:
        result["lora_write_error"] = repr(e)[:500]

    def dump():
        result["elapsed_s"] = time.perf_counter() - T0
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)

    for ph in [p for p in args.phases.split(",") if p]:
        po = os.path.join(args.work, f"{ph}.json")
        if os.path.exists(po):
            os.remove(po)
        vname = ph.partition("@")[2]
        if vname and vname not in variants:
            raise SystemExit(f"unknown variant {vname!r} (have {sorted(variants)})")
        vkw = dict(base_kw) if ph.startswith("vllm") else {}
        venv = {}
        for k, v in variants.get(vname, {}).items():
            if k == "_env":
                venv.update({ek: str(ev) for ek, ev in v.items()})
            else:
                vkw[k] = v
        timeout = args.phase_timeout
        if args.budget_s:
            left = args.budget_s - (time.perf_counter() - T0)
            if left < args.min_phase_s:
                log(f"phase {ph} skipped: {left:.0f}s left of --budget-s")
                result["phases"][ph] = {"ok": False, "error": f"skipped: {left:.0f}s left of the budget"}
                dump()
                continue
            timeout = min(timeout, left - 5)
        t = time.perf_counter()
        cmd = [sys.executable, os.path.abspath(__file__), "--out", args.out, "--phase", ph, "--phase-out", po,
               "--model-dir", args.model_dir, "--lora-dir", args.lora_dir, "--reps", str(args.reps),
               "--phase-kwargs", json.dumps(vkw), "--phase-env", json.dumps(venv)]
        if args.warmup_concurrent:
            cmd.append("--warmup-concurrent")
        log(f"=== phase {ph}: kwargs {vkw} env {venv} (timeout {timeout:.0f}s)")
        # own process group, so the engine-core process it spawns is ended with it before the next phase
        proc = subprocess.Popen(cmd, env={**os.environ, **venv}, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"phase {ph} timed out after {timeout:.0f}s")
        _kill_group(proc)
        r = json.loads(Path(po).read_text()) if os.path.exists(po) else {"ok": False, "error": "no result (timeout or crash)"}
        r["phase_wall_s"] = time.perf_counter() - t
        result["phases"][ph] = r
        dump()
        _wait_gpu_free()

    # summary
    ph = result["phases"]
    s = {}
    a16 = ph.get("anchor", {}).get("batch16", {}).get("output_tok_per_s")
    a1 = ph.get("anchor", {}).get("batch1", {}).get("output_tok_per_s")
    b = ph.get("vllm_base", {}).get("base")
    lo = ph.get("vllm_lora", {})
    if b:
        s["vllm_batch1_tok_per_s"] = b["batch1"]["output_tok_per_s"]
        s["vllm_concurrent16_tok_per_s"] = b["concurrent16"]["output_tok_per_s"]
        s["vllm_concurrent64_tok_per_s"] = b["concurrent64"]["output_tok_per_s"]
        if a16:
            s["concurrent16_vs_measured_anchor"] = b["concurrent16"]["output_tok_per_s"] / a16
        s["concurrent16_vs_reported_anchor_182"] = b["concurrent16"]["output_tok_per_s"] / 182
        if a1:
            s["batch1_vs_measured_anchor"] = b["batch1"]["output_tok_per_s"] / a1
    if b and lo.get("lora"):
        for k in ("batch1", "concurrent16", "concurrent64"):
            s[f"lora_overhead_{k}_vs_base_engine"] = b[k]["output_tok_per_s"] / lo["lora"][k]["output_tok_per_s"] - 1
            s[f"lora_overhead_{k}_vs_same_engine_no_adapter"] = (
                lo["base"][k]["output_tok_per_s"] / lo["lora"][k]["output_tok_per_s"] - 1)
    s["anchor_transformers_batch1_tok_per_s"] = a1
    s["anchor_transformers_batch16_tok_per_s"] = a16
    s.update(variant_summary(ph))
    result["summary"] = s
    dump()
    log(json.dumps(s, indent=1))


if __name__ == "__main__":
    main()
