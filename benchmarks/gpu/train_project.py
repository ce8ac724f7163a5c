"""Training throughput through the PROJECT's own code path on an 8B-shaped Llama (random weights).

training.finetune.FinetuneRecipe builds the model (random init from a LlamaConfig), the peft LoRA
wrap and the HF Trainer (no deepspeed: plain Trainer in-process); the batches are real FinGPT rows
tokenized by training.data (prompt masked to -100) with the tiny model's tokenizer (its ids lie
inside the 128256 vocab), packed to fixed 4096-token rows. Step times come from a TrainerCallback.

    # here (CPU): tokenize + pack the rows once (needs the tiny tokenizer under var/models)
    python benchmarks/gpu/train_project.py --prepare var/gpu_train_project_records.json
    # here (CPU) smoke test
    python benchmarks/gpu/train_project.py --tiny --seq 256 --out /tmp/tp.json
    # device
    python3 benchmarks/gpu/train_project.py --out $OUT/gpu_train_project.json
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

RECORDS = ROOT / "var/gpu_train_project_records.json"
PRESET = ROOT / "training/configs/gpu_8b.json"
PEAK = 989e12  # H100 SXM dense bf16 datasheet

LLAMA_8B = dict(
    hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192,
    rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128009,
)
TINY = dict(LLAMA_8B, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2)

VARIANTS = [
    # name, attn_implementation, gradient_checkpointing, torch_compile
    ("project_default", None, True, False),  # gpu_8b.json: gc on, the model's default attention
    ("sdpa_nogc", "sdpa", False, False),
    ("sdpa_nogc_compile", "sdpa", False, True),
]


def log(*a: object) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ------------------------------------------------------------------------------ data (CPU, here)
def prepare(out: Path, seq: int = 4096, n_rows: int = 64) -> None:
    from transformers import AutoTokenizer

    from forecast.basemodels import TINY_MODEL_DIR
    from training.config import load_run
    from training.data import IGNORE_INDEX, prepare_split
    from training.teacher import TeacherSettings, teacher_from_settings

    run = load_run(PRESET, base="llama")
    tok = AutoTokenizer.from_pretrained(str(ROOT / TINY_MODEL_DIR))
    split = prepare_split(run.data, tok, run.base_model.chat_format, teacher_from_settings(TeacherSettings()))
    enc = split.train.encoded + split.held.encoded
    lens = [len(e.input_ids) for e in enc]
    # Pack examples back to back (prompt -100, answer kept) into full rows: the example that does
    # not fit is cut at the row end (no padding, so the attention mask is all ones).
    rows, cur_ids, cur_lab = [], [], []
    i = 0
    while len(rows) < n_rows:
        e = enc[i % len(enc)]
        i += 1
        room = seq - len(cur_ids)
        cur_ids += e.input_ids[:room]
        cur_lab += e.labels[:room]
        if len(cur_ids) == seq:
            rows.append({"input_ids": cur_ids, "labels": cur_lab, "attention_mask": [1] * seq})
            cur_ids, cur_lab = [], []
    fill = sum(sum(r["attention_mask"]) for r in rows) / (len(rows) * seq)
    answer = sum(sum(1 for x in r["labels"] if x != IGNORE_INDEX) for r in rows) / (len(rows) * seq)
    meta = {"tokenizer": "HuggingFaceTB/SmolLM2-135M-Instruct (ids < 49152, inside the 128256 vocab)",
            "examples": len(enc), "example_tokens_mean": sum(lens) / len(lens), "example_tokens_max": max(lens),
            "seq": seq, "rows": len(rows), "fill": fill, "answer_token_share": answer,
            "chat_format": str(run.base_model.chat_format)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "train": rows}))
    log("wrote", out, meta)


# ------------------------------------------------------------------------------ flops
def flops_per_seq(cfg: dict, s: int, n_total: int, n_lora: int) -> tuple[float, float]:
    d, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    n_mm = n_total - n_lora - V * d  # frozen matmul params (embedding lookup has no FLOPs)
    lora = s * (4 * n_mm + 6 * n_lora) + 6 * s * s * d * L
    conventional = 6 * (n_total - n_lora) * s
    return lora, conventional


# ------------------------------------------------------------------------------ one variant
def run_variant(name, attn, gc_on, compile_, cfg_path, cfg, records, warm, meas, budget_s, tiny):
    import torch
    from transformers import TrainerCallback

    from training.config import run_from_dict
    from training.finetune import FinetuneRecipe

    raw = json.loads(PRESET.read_text())
    raw["base"] = "llama"
    raw["random_init_config"] = str(cfg_path)
    raw["train"].update(grad_accum=1, use_deepspeed=False, gradient_checkpointing=gc_on,
                        attn_implementation=attn, torch_compile=compile_, epochs=1)
    if tiny:
        raw["train"]["bf16"] = torch.cuda.is_available()
    run = run_from_dict({k: v for k, v in raw.items() if not k.startswith("_")})
    row = {"name": name, "attn_implementation_setting": attn, "gradient_checkpointing": gc_on,
           "torch_compile": compile_, "micro_batch": 1, "grad_accum": 1, "seq": len(records[0]["input_ids"])}
    t0 = time.perf_counter()
    dev = torch.cuda.is_available()
    if dev:
        torch.cuda.reset_peak_memory_stats()

    class Timer(TrainerCallback):
        def __init__(self):
            self.ends = []
            self.start = None

        def on_train_begin(self, args, state, control, **kw):
            if dev:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if dev:
                torch.cuda.synchronize()
            now = time.perf_counter()
            self.ends.append(now)
            if now - t0 > budget_s:
                control.should_training_stop = True
            return control

    with tempfile.TemporaryDirectory() as tmp:
        recipe = FinetuneRecipe(run, Path(tmp), records={"train": records, "eval": records[:2]})
        recipe.setup()
        row["build_s"] = time.perf_counter() - t0
        row["attn_implementation_used"] = recipe.model.get_base_model().config._attn_implementation
        n_total = sum(p.numel() for p in recipe.model.parameters())
        n_lora = sum(p.numel() for p in recipe.model.parameters() if p.requires_grad)
        row.update(n_params_total=n_total, n_params_lora=n_lora)
        timer = Timer()
        recipe.trainer.add_callback(timer)
        recipe.trainer.args.max_steps = warm + meas
        try:  # no epoch-end eval/checkpoint after the timed steps (the project's args otherwise)
            from transformers.trainer_utils import IntervalStrategy, SaveStrategy

            recipe.trainer.args.eval_strategy = IntervalStrategy.NO
            recipe.trainer.args.save_strategy = SaveStrategy.NO
        except Exception as e:
            row["args_note"] = f"kept epoch eval/save: {e}"
        metrics = recipe.train()
        ends = timer.ends
        steps = [b - a for a, b in zip([timer.start, *ends[:-1]], ends, strict=True)]
        row["step_times_s"] = steps
        row["steps_done"] = len(steps)
        row["first_step_s"] = steps[0] if steps else None
        m = steps[warm:]
        row["measured_steps"] = len(m)
        row["trainer_train_runtime_s"] = metrics.get("train_runtime")
        row["losses"] = [h["loss"] for h in recipe.trainer.state.log_history if "loss" in h][:50]
        if m:
            import statistics

            st = statistics.median(m)
            mean = sum(m) / len(m)
            s = row["seq"]
            lf, cf = flops_per_seq(cfg, s, n_total, n_lora)
            row.update(step_time_s_median=st, step_time_s_mean=mean,
                       samples_per_s=1 / mean, tokens_per_s=s / mean,
                       model_tflops_per_s=lf / mean / 1e12,
                       mfu_lora=lf / mean / PEAK, mfu_conventional_6N=cf / mean / PEAK,
                       flops_per_seq_lora=lf, flops_per_seq_6N=cf)
        if dev:
            row["peak_mem_alloc_GiB"] = torch.cuda.max_memory_allocated() / 2**30
            row["peak_mem_reserved_GiB"] = torch.cuda.max_memory_reserved() / 2**30
        del recipe, timer
    gc.collect()
    if dev:
        torch.cuda.empty_cache()
        row["mem_after_cleanup_GiB"] = torch.cuda.memory_allocated() / 2**30
    row["wall_s"] = time.perf_counter() - t0
    return row


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--prepare", type=Path)
    p.add_argument("--records", type=Path, default=RECORDS)
    p.add_argument("--out", type=Path, default=Path("/tmp/gpu_train_project.json"))
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--budget-s", type=float, default=330, help="whole run; each variant time-boxed")
    p.add_argument("--only", default="")
    a = p.parse_args()
    if a.prepare:
        prepare(a.prepare)
        return 0
    import torch

    T0 = time.perf_counter()
    data = json.loads(a.records.read_text())
    recs = [{k: v[: a.seq] for k, v in r.items()} for r in data["train"]]
    cfg = TINY if a.tiny else LLAMA_8B
    tmpd = Path(tempfile.mkdtemp())
    from transformers import LlamaConfig

    LlamaConfig(**cfg).save_pretrained(tmpd)
    import importlib.metadata as md

    def ver(pkg):
        try:
            return md.version(pkg)
        except Exception:
            return None

    result = {
        "what": "project code path: training.finetune.FinetuneRecipe (random-init LlamaConfig 8B shape, peft LoRA "
                "r8/a16/0.1 q,k,v,o from gpu_8b.json, HF Trainer WITHOUT deepspeed (deepspeed is not installed on the "
                "device; the preset's ZeroOneAdam is not in deepspeed 0.19.8 anyway), Trainer's default AdamW) + "
                "training.data masking (real FinGPT rows, prompt labels -100), tiny tokenizer ids, packed to fixed rows",
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "versions": {k: ver(k) for k in ("torch", "transformers", "peft", "accelerate")},
        "model_config": cfg, "data": data["meta"], "seq": a.seq, "micro_batch": 1, "grad_accum": 1,
        "grad_accum_note": "gpu_8b.json uses 16; 1 here so each Trainer step is one 4096-token sample (the optimizer "
                           "step over 3.4M LoRA params is negligible)",
        "warmup_steps": a.warmup, "peak_flops": PEAK,
        "flops_formula": {"lora": "tokens*(4*N_mm + 6*N_lora) + 6*s^2*d*L per sequence; N_mm = frozen params - vocab*d",
                          "conventional_6N": "6 * N_frozen_total * tokens (embedding included)",
                          "mfu": "flops / mean measured step time / 989 TFLOP/s"},
        "variants": [],
    }

    def dump():
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2))

    only = set(filter(None, a.only.split(",")))
    todo = [v for v in VARIANTS if not only or v[0] in only]
    for i, (name, attn, gc_on, comp) in enumerate(todo):
        left = a.budget_s - (time.perf_counter() - T0)
        share = left / (len(todo) - i)
        if left < 45:
            result["variants"].append({"name": name, "skipped": f"time box: {left:.0f}s left"})
            continue
        log(f"variant {name}: box {share:.0f}s")
        try:
            row = run_variant(name, attn, gc_on, comp, tmpd, cfg, recs, a.warmup, a.steps, share - 5, a.tiny)
        except Exception as e:  # keep the other variants' numbers
            import traceback

            traceback.print_exc()
            row = {"name": name, "error": f"{type(e).__name__}: {e}"[:2000]}
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        result["variants"].append(row)
        log(json.dumps({k: v for k, v in row.items() if k not in ("step_times_s", "losses")}))
        dump()
    result["total_s"] = time.perf_counter() - T0
    dump()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
