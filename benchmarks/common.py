"""Shared pieces of the CPU benchmarks: real prompts, the tiny model, a LoRA adapter, dtype."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from forecast.basemodels import materialize_tiny_model
from forecast.providers.snapshot import SnapshotMarketData
from forecast.templates import ChatFormat, render_chat
from forecast.windows import WindowConfig, build_prompt

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "var" / "bench"
TICKERS = ["AAPL", "MSFT", "KO", "JPM", "BA", "CAT", "DIS", "HD", "IBM", "MCD", "NKE", "PG", "TRV", "UNH", "V", "WMT"]
# 4 weeks, 3 news items a week, no financials: ≈1,700 prompt tokens with the tiny model's tokenizer.
BENCH_WINDOW = WindowConfig(weeks=4, news_per_week=3, with_financials=False)


def cpu_dtype() -> str:
    """bfloat16 where the CPU has native bf16 (AVX512_BF16 / AMX), else float32."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def prompts(n: int, fmt: ChatFormat = ChatFormat.LLAMA3, day: dt.date = dt.date(2023, 12, 10)) -> list[str]:
    market = SnapshotMarketData()
    return [render_chat(build_prompt(market, t, day, BENCH_WINDOW).prompt, fmt) for t in TICKERS[:n]]


def tiny_model() -> Path:
    return materialize_tiny_model(ROOT / "var" / "models" / "smollm2-135m-instruct")


def random_adapter(rank: int = 8, dest: Path | None = None) -> Path:
    """A rank-``rank`` LoRA on q/k/v/o with non-zero B (so it changes outputs), peft format."""
    dest = dest or WORK / f"lora-r{rank}"
    if (dest / "adapter_config.json").exists():
        return dest
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model()), dtype=torch.float32)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, init_lora_weights=False,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():  # small weights: the adapter perturbs, it does not destroy the model
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(0.05)
    peft_model.save_pretrained(str(dest))
    return dest


def merged_model(adapter: Path) -> Path:
    """The base with ``adapter`` merged into its weights (what the dominant arm can serve)."""
    dest = adapter.parent / (adapter.name + "-merged")
    if (dest / "config.json").exists():
        return dest
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model()), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(dest))
    AutoTokenizer.from_pretrained(str(tiny_model())).save_pretrained(str(dest))
    return dest


def machine() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=ROOT).stdout.strip()
    rev += "+uncommitted" if dirty else ""
    gpu = gpu_names()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform(),
            "dtype": cpu_dtype(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "code_revision": rev,
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]} | ({"gpu": gpu} if gpu else {})


def gpu_names() -> str | None:
    """The GPUs by name (nvidia-smi, so this process does not initialize CUDA); None without."""
    import shutil

    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    return "; ".join(out.splitlines()) or None


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
