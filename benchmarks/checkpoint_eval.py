"""Checkpoint evaluation: transformers ``generate`` vs vLLM + a LoRA per checkpoint, one run.

    python benchmarks/checkpoint_eval.py var/runs/cpu/llama [--modes vllm vllm_free transformers]
        [--demo-wall transformers=SECONDS --demo-wall vllm=SECONDS]

Each mode evaluates every checkpoint of the same trained run on the same held-back prompts
(``training.evaluate.evaluate_run`` on a copy of the run directory, so the run's own
``eval.json`` and adapters stay as they are), in its own process, one mode after the other:

- ``transformers``: each checkpoint merged into the float32 base, then batched ``generate``;
- ``vllm``: one vLLM engine for the run, a ``LoRARequest`` per checkpoint, answers under the
  FinGPT answer grammar (the default ``eval`` settings);
- ``vllm_free``: the same engine settings without the grammar (its cost, and the text the
  transformers path must match).

Records per mode the wall seconds of the whole evaluation (engine start included), the
generation seconds, prompts/s and how each prediction was read (parsed / probed / unreadable),
and how many answers vllm_free and transformers wrote identically. ``--demo-wall`` adds the
demo's training step as timed outside (``python -m training both --config cpu_tiny.json``).
Writes benchmarks/results/checkpoint_eval.json and prints a table; no assertion on time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine

MODES: dict[str, dict[str, Any]] = {  # mode -> eval settings replaced on the run's own
    "transformers": {"backend": "transformers"},
    "vllm": {"backend": "vllm", "answer_grammar": True},
    "vllm_free": {"backend": "vllm", "answer_grammar": False},
}


def child(mode: str, run_dir: Path) -> dict[str, Any]:
    """One mode on a scratch copy of ``run_dir``; the numbers as one JSON line."""
    from training.evaluate import RunFiles, evaluate_run

    with tempfile.TemporaryDirectory(prefix=f"ckpt-eval-{mode}-") as tmp:
        work = Path(tmp) / run_dir.name
        shutil.copytree(run_dir, work, ignore=shutil.ignore_patterns("global_step*", "eval.json"))
        settings = dataclasses.replace(RunFiles.read(work).run.eval, **MODES[mode])
        t0 = time.perf_counter()
        report = evaluate_run(work, adapter_root=Path(tmp) / "adapters", version="v1", eval_settings=settings)
        wall = time.perf_counter() - t0
    checkpoints = report["checkpoints"]
    answers = len(checkpoints) * report["eval_rows"]
    generation = sum(c["generation_runtime"] for c in checkpoints)
    return {
        "eval_settings": dataclasses.asdict(settings),
        "checkpoints": len(checkpoints),
        "answers": answers,
        "wall_s": wall,
        "start_s": report["generation"]["start_seconds"],
        "generation_s": generation,
        "prompts_per_s": answers / generation,
        "prompts_per_s_with_start": answers / wall,
        "prediction_read": {
            how: sum(c["prediction_read"][how] for c in checkpoints)
            for how in ("parsed", "probed", "unreadable")
        },
        "per_checkpoint": [
            {k: c[k] for k in ("checkpoint", "generation_runtime", "mse", "binary_accuracy", "prediction_read")}
            for c in checkpoints
        ],
        "texts": [s["text"] for c in checkpoints for s in c["samples"]],
    }


def run_mode(mode: str, run_dir: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, str(run_dir), "--child", mode], capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{out.stderr[-3000:]}")
    line = next(x for x in reversed(out.stdout.splitlines()) if x.startswith("{"))
    return dict(json.loads(line))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=["vllm", "vllm_free", "transformers"])
    ap.add_argument("--child", choices=list(MODES))
    ap.add_argument("--demo-wall", action="append", default=[], metavar="BACKEND=SECONDS",
                    help="the demo's training step, timed outside, per eval backend")
    ap.add_argument("--out", type=Path, default=RESULTS / "checkpoint_eval.json")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.run_dir)), flush=True)
        return

    modes: dict[str, Any] = {}
    for mode in args.modes:
        modes[mode] = run_mode(mode, args.run_dir)
        m = modes[mode]
        print(f"{mode:<13} wall {m['wall_s']:7.1f} s  start {m['start_s']:5.1f} s  "
              f"generation {m['generation_s']:7.1f} s  {m['prompts_per_s']:.3f} prompts/s  {m['prediction_read']}",
              flush=True)
    texts = {mode: m.pop("texts") for mode, m in modes.items()}
    same = None
    if "vllm_free" in texts and "transformers" in texts:
        pairs = list(zip(texts["vllm_free"], texts["transformers"], strict=True))
        same = {"identical": sum(a == b for a, b in pairs), "of": len(pairs)}

    def ratio(a: str, b: str, key: str) -> float | None:
        return modes[a][key] / modes[b][key] if a in modes and b in modes else None

    demo = {k: float(v) for k, v in (w.split("=", 1) for w in args.demo_wall)}
    payload = {
        "benchmark": "checkpoint_eval",
        "command": "python benchmarks/checkpoint_eval.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "run": json.loads((args.run_dir / "settings.json").read_text())["base"],
        "model": "SmolLM2-135M-Instruct (stand-in for the 8B bases)",
        "modes": modes,
        "speedup": {
            "transformers_over_vllm_wall": ratio("transformers", "vllm", "wall_s"),
            "transformers_over_vllm_generation": ratio("transformers", "vllm", "generation_s"),
            "vllm_over_vllm_free_generation": ratio("vllm", "vllm_free", "generation_s"),
        },
        "vllm_free_vs_transformers_text": same,
        "demo_training_step_wall_s": demo or None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"speedup {payload['speedup']}\nsame text {same}\nwrote {args.out}")


if __name__ == "__main__":
    main()
