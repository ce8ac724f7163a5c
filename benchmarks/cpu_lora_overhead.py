"""LoRA overhead on vLLM CPU, and vLLM vs transformers + peft, on real FinGPT prompts.

    python benchmarks/cpu_lora_overhead.py [--prompts 8] [--max-tokens 128]

Every mode runs the same prompts greedily with a fixed output length in its own worker
process; all workers stay loaded and the rounds interleave the modes (alternating order), so
load from other processes on a shared machine hits every mode alike:

- ``base``: vLLM, the tiny base model, no LoRA;
- ``lora_stock``: vLLM + a rank-8 LoRA, vLLM's own CPU punica ops;
- ``lora_grouped``: the same with the product's grouped CPU LoRA ops (service/cpu_lora_ops.py);
- ``merged``: vLLM serving the adapter merged into the base weights (the dominant arm's path);
- ``hf_peft``: transformers + peft ``generate``, one prompt at a time (the plain alternative).

Each worker first runs the whole prompt set once (warm-up: every shape the rounds meet); a
ratio is the median over rounds of the two modes' wall times in that round.
Writes benchmarks/results/cpu_lora_overhead.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    RESULTS,
    cpu_dtype,
    machine,
    merged_model,
    prompts,
    random_adapter,
    tiny_model,
    write_result,
)

MODES = ("base", "lora_stock", "lora_grouped", "merged", "hf_peft")


class VLLMRunner:
    def __init__(self, mode: str, max_tokens: int) -> None:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        adapter = random_adapter(8)
        model = merged_model(adapter) if mode == "merged" else tiny_model()
        lora = mode.startswith("lora")
        t0 = time.perf_counter()
        self.llm = LLM(model=str(model), dtype=cpu_dtype(), enforce_eager=True, max_model_len=4096,
                       enable_lora=lora, max_lora_rank=8, max_loras=1, seed=0, gpu_memory_utilization=0.08)
        self.startup_s = time.perf_counter() - t0
        self.params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        self.lora = LoRARequest("bench", 1, str(adapter)) if lora else None

    def run(self, texts: list[str]) -> dict[str, Any]:
        t0 = time.perf_counter()
        outs = self.llm.generate(texts, self.params, lora_request=self.lora, use_tqdm=False)
        wall = time.perf_counter() - t0
        return {"wall_s": wall, "prompt_tokens": sum(len(o.prompt_token_ids) for o in outs),
                "output_tokens": sum(len(o.outputs[0].token_ids) for o in outs),
                "first_text": outs[0].outputs[0].text[:120]}


class HFRunner:
    def __init__(self, max_tokens: int) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.perf_counter()
        dtype = torch.bfloat16 if cpu_dtype() == "bfloat16" else torch.float32
        self.tok = AutoTokenizer.from_pretrained(str(tiny_model()))
        base = AutoModelForCausalLM.from_pretrained(str(tiny_model()), dtype=dtype)
        self.model = PeftModel.from_pretrained(base, str(random_adapter(8))).eval()
        self.gen = {"max_new_tokens": max_tokens, "min_new_tokens": max_tokens, "do_sample": False}
        self.startup_s = time.perf_counter() - t0

    def run(self, texts: list[str]) -> dict[str, Any]:
        import torch

        encoded = [self.tok(t, return_tensors="pt", add_special_tokens=False) for t in texts]
        n_out = 0
        with torch.inference_mode():
            t0 = time.perf_counter()
            for enc in encoded:
                out = self.model.generate(**enc, **self.gen)
                n_out += out.shape[1] - enc["input_ids"].shape[1]
            wall = time.perf_counter() - t0
        return {"wall_s": wall, "prompt_tokens": sum(e["input_ids"].shape[1] for e in encoded), "output_tokens": n_out}


def child(mode: str, n: int, max_tokens: int) -> None:
    """A long-lived worker: loads its engine once, then answers one line per round."""
    if mode == "lora_stock":
        os.environ["FORECAST_CPU_LORA_OPS"] = "0"
    texts = prompts(n)
    runner: VLLMRunner | HFRunner = HFRunner(max_tokens) if mode == "hf_peft" else VLLMRunner(mode, max_tokens)
    runner.run(texts[:1] if mode == "hf_peft" else texts)  # warm-up: every shape the rounds meet
    print(json.dumps({"ready": True, "startup_s": runner.startup_s}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        print(json.dumps(runner.run(texts)), flush=True)


def _read_json(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            return json.loads(line)  # type: ignore[no-any-return]
    raise RuntimeError("benchmark worker exited early")


def plot(payload: dict[str, Any], path: Path) -> None:
    """Each mode's wall time per round, relative to base in the same round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = payload["modes"]
    base = [r["wall_s"] for r in modes["base"]["rounds"]]
    names = list(modes)
    medians = [statistics.median(r["wall_s"] / b for r, b in zip(modes[m]["rounds"], base, strict=True)) for m in names]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    labels = {"lora_stock": "LoRA, vLLM's CPU ops", "lora_grouped": "LoRA, product's fused path",
              "merged": "adapter merged", "hf_peft": "transformers + peft"}
    bars = ax.barh([labels.get(m, m) for m in names], medians, color=["grey" if m in ("base", "merged") else "tab:blue" for m in names])
    ax.bar_label(bars, labels=[f"{v:.2f}x" for v in medians], padding=3, fontsize=8)
    ax.axvline(payload["goals"]["lora_over_base"], linestyle=":", color="red", label="LoRA goal 1.25x")
    ax.set(xscale="log", xlabel="wall time / base vLLM, same round (median)",
           title=f"{payload['prompts']} FinGPT prompts, {payload['max_tokens']} tokens out, {payload['machine']['cpu']}")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--modes", nargs="+", default=list(MODES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", choices=MODES)
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/cpu_lora_overhead.json")
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON")
    args = ap.parse_args()
    if args.plot_only:
        path = args.out or RESULTS / "cpu_lora_overhead.json"
        plot(json.loads(path.read_text()), path.with_suffix(".png"))
        return
    if args.child:
        child(args.child, args.prompts, args.max_tokens)
        return

    random_adapter(8)
    merged_model(random_adapter(8))
    env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND=os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "0-1"))
    workers: dict[str, subprocess.Popen[str]] = {}
    startup: dict[str, float] = {}
    for mode in args.modes:  # all engines stay loaded; rounds interleave the modes
        workers[mode] = subprocess.Popen(
            [sys.executable, __file__, "--child", mode, "--prompts", str(args.prompts), "--max-tokens", str(args.max_tokens)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        startup[mode] = _read_json(workers[mode])["startup_s"]
    rounds: dict[str, list[dict[str, Any]]] = {m: [] for m in args.modes}
    for r in range(args.rounds):
        for mode in args.modes if r % 2 == 0 else reversed(args.modes):
            proc = workers[mode]
            assert proc.stdin is not None
            proc.stdin.write("run\n")
            proc.stdin.flush()
            rounds[mode].append(_read_json(proc))
            print(f"round {r} {mode:<14} {rounds[mode][-1]['wall_s']:.1f} s", flush=True)
    for proc in workers.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=120)
    results: dict[str, Any] = {}
    for mode, rs in rounds.items():
        wall = sum(x["wall_s"] for x in rs)
        out_tokens = sum(x["output_tokens"] for x in rs)
        results[mode] = {"rounds": rs, "wall_s": wall, "startup_s": startup[mode],
                         "req_per_s": args.prompts * len(rs) / wall, "output_tok_per_s": out_tokens / wall,
                         "mean_prompt_tokens": rs[0]["prompt_tokens"] / args.prompts}
        print(f"{mode:<14} {results[mode]['req_per_s']:.3f} req/s  {results[mode]['output_tok_per_s']:.1f} tok/s")

    def ratio(a: str, b: str) -> float | None:
        """Median over rounds of the two modes' wall times, each round measured back to back."""
        if a not in results or b not in results:
            return None
        return statistics.median(x["wall_s"] / y["wall_s"] for x, y in zip(rounds[a], rounds[b], strict=True))

    payload = {
        "benchmark": "cpu_lora_overhead",
        "command": "python benchmarks/cpu_lora_overhead.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "model": "SmolLM2-135M-Instruct (stand-in for the 8B bases)",
        "prompts": args.prompts, "max_tokens": args.max_tokens, "rounds": args.rounds,
        "modes": results,
        "ratios": {
            "lora_stock_over_base": ratio("lora_stock", "base"),
            "lora_grouped_over_base": ratio("lora_grouped", "base"),
            "merged_over_base": ratio("merged", "base"),
            "hf_peft_over_lora_grouped": ratio("hf_peft", "lora_grouped"),
            "hf_peft_over_merged": ratio("hf_peft", "merged"),
        },
        "goals": {"lora_over_base": 1.25, "vllm_over_hf_peft": 3.0},
    }
    if args.out:
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
    path = args.out or write_result("cpu_lora_overhead", payload)
    plot(payload, path.with_suffix(".png"))
    print(json.dumps(payload["ratios"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
