"""Score every checkpoint of a run on its held-back weeks; keep the MSE minimum as the adapter.

    python -m training.evaluate var/runs/cpu/llama [--adapter-root var/adapters] [--backend vllm]

Per checkpoint: greedy generation on the held-back prompts (``eval.backend``: one vLLM engine
for the whole run with a LoRA per checkpoint, under the answer grammar unless
``eval.answer_grammar`` is off; or transformers ``generate`` on each merged checkpoint) → binary accuracy, MSE (bin
midpoints), ROUGE-1/2/L per answer section, generation runtime and speed; with the train loss,
eval loss and eval samples/s the Trainer logged at that step. The naive baselines (majority
training bin, always up 0-1%, last-week momentum) are scored on the same rows. Writes
``eval.json`` in the run directory and the kept checkpoint as ``<root>/<name>/<version>/``
(peft adapter + ``adapter.json``, the manifest the service reads).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forecast import metrics
from forecast.answer import parse_answer
from training.config import EvalSettings, RunSettings, run_from_dict
from training.data import Example, Split, fit_prompt, prepare_split
from training.generate import CheckpointGenerator, TransformersCheckpoints
from training.manifest import write_adapter
from training.teacher import TeacherSettings, teacher_from_settings


@dataclass
class RunFiles:
    run_dir: Path
    run: RunSettings
    data: dict[str, Any]
    log: dict[str, Any]

    @classmethod
    def read(cls, run_dir: Path) -> RunFiles:
        settings = json.loads((run_dir / "settings.json").read_text())
        core = {k: v for k, v in settings.items() if k not in ("model_id", "model_path")}
        return cls(
            run_dir=run_dir,
            run=run_from_dict(core),
            data=json.loads((run_dir / "data.json").read_text()),
            log=json.loads((run_dir / "train_log.json").read_text()),
        )

    def checkpoints(self) -> list[tuple[int, Path]]:
        found = [(int(p.name.split("-")[1]), p) for p in self.run_dir.glob("checkpoint-*")]
        return sorted(found)

    def logged_at(self, step: int, key: str) -> float | None:
        for entry in self.log["log_history"]:
            if entry.get("step") == step and key in entry:
                return float(entry[key])
        return None

    def train_loss_until(self, step: int, after: int) -> float | None:
        losses = [
            float(e["loss"]) for e in self.log["log_history"]
            if "loss" in e and after < e.get("step", 0) <= step
        ]
        return sum(losses) / len(losses) if losses else None


def held_back(files: RunFiles, tokenizer: Any) -> tuple[Split, list[Example]]:
    """The run's split rebuilt from its settings, checked against the keys it trained with."""
    teacher = teacher_from_settings(TeacherSettings())  # cached: a rerun asks the endpoint nothing
    split = prepare_split(files.run.data, tokenizer, files.run.base_model.chat_format, teacher)
    if [e.key for e in split.held.examples] != files.data["eval_keys"]:
        raise RuntimeError("held-back rows differ from the ones the run was trained with")
    return split, split.held.examples


def score_rows(answers: list[Any], rows: list[Example]) -> dict[str, Any]:
    preds = [a.parsed.prediction for a in answers]
    labels = [r.label for r in rows]
    references = [parse_answer(r.answer) for r in rows]
    return {
        "binary_accuracy": metrics.binary_accuracy(preds, labels),
        "mse": metrics.mse(preds, labels),
        "rouge": metrics.rouge_by_section([a.parsed for a in answers], references),
        "prediction_read": {
            how: sum(a.how == how for a in answers) for how in ("parsed", "probed", "unreadable")
        },
    }


@contextmanager
def checkpoint_generator(
    run: RunSettings, model_path: str, tokenizer: Any, prompts: Sequence[list[int]],
) -> Iterator[CheckpointGenerator]:
    """The run's ``eval.backend``, started once for all its checkpoints and stopped after."""
    fmt = run.base_model.chat_format
    if run.eval.backend == "transformers":
        yield TransformersCheckpoints(
            model_path, tokenizer, fmt, run.eval.max_new_tokens, run.eval.force_prediction,
        )
        return
    from training.vllm_generate import PROBE_ROOM, vllm_checkpoints

    longest = max(len(p) for p in prompts) + run.eval.max_new_tokens + PROBE_ROOM
    with vllm_checkpoints(
        model_path, tokenizer, fmt, run.eval, lora_rank=run.lora.r, max_model_len=longest,
    ) as engine:
        yield engine


def evaluate_run(
    run_dir: Path, adapter_root: Path | None = None, version: str | None = None,
    eval_settings: EvalSettings | None = None,
) -> dict[str, Any]:
    """Score every checkpoint of ``run_dir``; ``eval_settings`` replaces the run's own (the
    benchmark compares backends on one run)."""
    from transformers import AutoTokenizer

    files = RunFiles.read(run_dir)
    if eval_settings is not None:
        files.run = dataclasses.replace(files.run, eval=eval_settings)
    run, fmt = files.run, files.run.base_model.chat_format
    model_path = run.model_path()
    tokenizer: Any = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    split, rows = held_back(files, tokenizer)
    budget = run.data.max_length - run.eval.max_new_tokens - 32  # room for the probe header
    prompts = []
    for r in rows:
        fitted = fit_prompt(r.prompt, tokenizer, fmt, budget)
        if fitted is None:
            raise RuntimeError(f"held-back prompt {r.key} does not fit {budget} tokens")
        prompts.append(fitted[0])

    labels = [r.label for r in rows]
    train_labels = [e.label for e in split.train.examples]
    baselines = {
        name: s.as_dict()
        for name, s in metrics.naive_baselines(labels, [r.last_week for r in rows], train_labels).items()
    }

    results: list[dict[str, Any]] = []
    previous, started = 0, time.perf_counter()
    with checkpoint_generator(run, model_path, tokenizer, prompts) as generator:
        engine_start = time.perf_counter() - started
        for step, path in files.checkpoints():
            t0 = time.perf_counter()  # includes loading the checkpoint (merge or LoRA load)
            texts, answers = generator.generate_and_read(path, prompts)
            runtime = time.perf_counter() - t0
            results.append(checkpoint_result(files, step, previous, path, rows, texts, answers, runtime))
            previous = step
            print(f"{path.name}: mse {results[-1]['mse']:.2f} acc {results[-1]['binary_accuracy']:.2f} "
                  f"eval_loss {results[-1]['eval_loss']} ({runtime:.0f}s)")
    seconds = time.perf_counter() - started
    print(f"evaluated {len(results)} checkpoints x {len(rows)} rows with {run.eval.backend} "
          f"in {seconds:.1f}s (start {engine_start:.1f}s)")

    best = pick_best(results)
    report = {
        "base": run.base,
        "model_id": run.model_id,
        "stands_in_for": run.base_model.model_id if run.model_id != run.base_model.model_id else None,
        "eval_rows": len(rows),
        "window": files.data["window"],
        "train_metrics": files.log["train_metrics"],
        "baselines": baselines,
        "generation": {
            "backend": run.eval.backend,
            "answer_grammar": run.eval.answer_grammar and run.eval.backend == "vllm",
            "start_seconds": engine_start,
            "seconds": seconds,
        },
        "checkpoints": results,
        "best_checkpoint": best["checkpoint"],
        "evaluated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    root = adapter_root or run.adapter_root
    adapter_dir = write_adapter(run_dir / best["checkpoint"], run, files.data["window"], best, root, version)
    report["adapter_dir"] = str(adapter_dir)
    (run_dir / "eval.json").write_text(json.dumps(report, indent=2))
    return report


def checkpoint_result(
    files: RunFiles, step: int, previous: int, path: Path, rows: list[Example], texts: list[str],
    answers: list[Any], runtime: float,
) -> dict[str, Any]:
    return {
        "step": step,
        "checkpoint": path.name,
        "epoch": files.logged_at(step, "epoch"),
        "train_loss": files.train_loss_until(step, previous),
        "eval_loss": files.logged_at(step, "eval_loss"),
        "eval_samples_per_second": files.logged_at(step, "eval_samples_per_second"),
        "generation_runtime": runtime,
        "generation_samples_per_second": len(rows) / runtime,
        **score_rows(answers, rows),
        "samples": [
            {"key": r.key, "label": r.label.value, "text": t, "probe": a.probe,
             "prediction": a.parsed.prediction.value, "read": a.how}
            for r, t, a in zip(rows, texts, answers, strict=True)
        ],
    }


def pick_best(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The MSE minimum; ties go to the lower eval loss, then the earlier step."""
    if not results:
        raise RuntimeError("the run saved no checkpoint")
    return min(results, key=lambda r: (r["mse"], r["eval_loss"] if r["eval_loss"] is not None else float("inf"), r["step"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="training.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--adapter-root", type=Path)
    p.add_argument("--version", help="default: the next v<N> under the adapter name")
    p.add_argument("--backend", choices=("vllm", "transformers"), help="default: the run's eval.backend")
    args = p.parse_args(argv)
    settings = None
    if args.backend is not None:
        settings = dataclasses.replace(RunFiles.read(args.run_dir).run.eval, backend=args.backend)
    report = evaluate_run(args.run_dir, args.adapter_root, args.version, settings)
    print(f"kept {report['best_checkpoint']} → {report['adapter_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
