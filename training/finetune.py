"""LoRA fine-tune recipe: setup → train → save, one base per run, under the deepspeed launcher.

    python -m training.finetune --config training/configs/cpu_tiny.json --base llama

re-executes itself as ``deepspeed --num_gpus 1 --module training.finetune ...`` (pass
``--no-launch`` to run in the current process, as the launcher's worker does). The run
directory holds the Trainer checkpoints (``checkpoint-N``: peft adapter + deepspeed state, so
``--resume`` picks up where a killed run stopped), ``settings.json``, ``data.json`` (which rows
trained and which are held back) and ``train_log.json`` (the Trainer's log history: train and
eval loss, eval samples/s, runtimes; ``step_times``: per optimizer step wall time, tokens and
examples). ``training.evaluate`` then scores every checkpoint; ``--ship`` instead writes the last
checkpoint as a servable adapter at once (throughput runs on random weights, which evaluation
cannot score).

The GPU recipe (``configs/gpu_8b.json``, see README): SDPA attention, no gradient checkpointing,
regional torch.compile, packed rows (``training.packing``) and lm_head + cross-entropy only on the
answer positions (``training.packing.answer_only_loss``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forecast.basemodels import BASES
from training.config import (
    RunSettings,
    require_supported_optimizer,
    resolve_preset,
    run_from_dict,
)
from training.data import IGNORE_INDEX

if TYPE_CHECKING:
    from training.data import Split

TOKENS_PER_SAMPLE = 4096  # the "4096-token equivalent" sample of benchmarks/gpu/NOTES.md


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="training.finetune", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=resolve_preset,
                   help="preset path or shipped name (default: 8B recipe)")
    p.add_argument("--base", choices=sorted(BASES), help="which base to train")
    p.add_argument("--model", help="'tiny', a local path or a model id (default: the base's 8B id)")
    p.add_argument("--deepspeed-config", help="override train.deepspeed_config")
    p.add_argument("--no-deepspeed", action="store_true", help="train.use_deepspeed false: plain Trainer")
    p.add_argument("--random-init-config", help="a model config.json (or its dir): random weights")
    p.add_argument("--tokenizer", help="tokenizer dir or id (default: the model's own)")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps (train.max_steps)")
    p.add_argument("--save-steps", type=int, help="checkpoint (and eval) every N steps (train.save_steps)")
    p.add_argument("--name", help="adapter name (default: fingpt-<base>)")
    p.add_argument("--run-dir", type=Path, help="default: <runs_dir>/<base>")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--ship", action="store_true",
                   help="write the last checkpoint as <adapter_root>/<name>/<version> (no evaluation)")
    p.add_argument("--adapter-root", type=Path, help="with --ship (default: the preset's adapter_root)")
    p.add_argument("--version", help="with --ship (default: the next v<N>)")
    p.add_argument("--no-launch", action="store_true", help="do not re-exec under deepspeed")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    raw = json.loads(args.config.read_text()) if args.config else {}
    if args.base:
        raw["base"] = args.base
    if args.model:
        raw["model"] = args.model
    for key in ("random_init_config", "tokenizer", "name"):
        if getattr(args, key):
            raw[key] = getattr(args, key)
    train = raw.setdefault("train", {})
    if args.deepspeed_config:
        train["deepspeed_config"] = args.deepspeed_config
    if args.no_deepspeed:
        train["use_deepspeed"] = False
    if args.max_steps is not None:
        train["max_steps"] = args.max_steps
    if args.save_steps is not None:
        train["save_steps"] = args.save_steps
    return run_from_dict(raw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(argv: list[str], port: int) -> list[str]:
    """The deepspeed launcher command that runs this module as its single worker (on its own
    rendezvous port, so runs side by side do not collide on the default 29500)."""
    # The launcher of this interpreter's environment first: another deepspeed on PATH would
    # run the worker under a different environment (and code checkout).
    sibling = Path(sys.executable).with_name("deepspeed")
    exe = str(sibling) if sibling.exists() else shutil.which("deepspeed") or str(sibling)
    return [
        exe, "--num_gpus", "1", "--master_port", str(port),
        "--module", "training.finetune", *argv, "--no-launch",
    ]


def launch(config: Path | None, base: str, run_dir: Path, resume: bool = False) -> None:
    """One base's fine-tune in its own process (which re-executes itself under the deepspeed
    launcher); raises ``CalledProcessError`` if it fails."""
    cmd = [sys.executable, "-m", "training.finetune", "--base", base, "--run-dir", str(run_dir)]
    if config is not None:
        cmd += ["--config", str(config)]
    if resume:
        cmd.append("--resume")
    subprocess.run(cmd, check=True)


# -- the dataset, shared by the recipe and the dry run ---------------------------------------------
def load_tokenizer(name_or_path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_split(run: RunSettings, tokenizer: Any) -> Split:
    """The run's rows in its base's chat format, tokenized and split at the cutoff."""
    from training.data import prepare_split
    from training.teacher import TeacherSettings, teacher_from_settings

    teacher = teacher_from_settings(TeacherSettings())
    return prepare_split(run.data, tokenizer, run.base_model.chat_format, teacher)


def data_summary(split: Split) -> dict[str, Any]:
    """Which rows train and which are held back, and their tokens (the run's ``data.json``)."""
    return {
        "window": split.window(),
        "train_keys": [e.key for e in split.train.examples],
        "eval_keys": [e.key for e in split.held.examples],
        "skipped_too_long": {"train": split.train.skipped, "eval": split.held.skipped},
        "news_dropped": sum(e.dropped_news for e in split.train.encoded),
        "unanswered_market_rows": split.unanswered,
        "train_tokens": sum(len(e.input_ids) for e in split.train.encoded),
        "answer_tokens": sum(len(e.input_ids) - e.prompt_tokens for e in split.train.encoded),
    }


def dry_run(run: RunSettings) -> dict[str, Any]:
    """What a fine-tune of ``run`` checks and builds before it loads the model, and nothing
    more: the validated settings, the deepspeed optimizer, the tokenized dataset. Nothing is
    trained or written (except the tiny model's checkpoint, materialized once, when it stands
    in)."""
    if run.train.use_deepspeed:
        require_supported_optimizer(run.train.deepspeed_config)
    model_path = run.model_path() if run.random_init_config is None else ""
    split = build_split(run, load_tokenizer(run.tokenizer or model_path))
    return {"settings": run.to_dict(), "model_id": run.model_id, "data": data_summary(split)}


# -- the recipe's Trainer: answer-only logits, step timing ------------------------------------------
@dataclass
class StepLog:
    """Per optimizer step: wall time (CUDA-synchronized at both ends), tokens, examples and answer
    targets, so a runner can compute samples/s in 4096-token equivalents past the warm-up."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    _counts: list[tuple[Any, Any, Any]] = field(default_factory=list)
    _start: float = 0.0

    @staticmethod
    def _sync() -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def begin(self) -> None:
        self._sync()
        self._counts.clear()
        self._start = time.perf_counter()

    def add(self, inputs: dict[str, Any]) -> None:
        """One micro-batch (device tensors are summed at step end, after the sync: no stall)."""
        ids = inputs["input_ids"]
        tokens = inputs["attention_mask"].sum() if "attention_mask" in inputs else ids.numel()
        examples = (inputs["position_ids"] == 0).sum() if "position_ids" in inputs else ids.shape[0]
        self._counts.append((tokens, examples, (inputs["labels"][:, 1:] != IGNORE_INDEX).sum()))

    def end(self, step: int) -> None:
        self._sync()
        seconds = time.perf_counter() - self._start
        tokens, examples, answer = (sum(int(c[i]) for c in self._counts) for i in range(3))
        self.steps.append({"step": step, "seconds": seconds, "tokens": tokens, "examples": examples,
                           "answer_tokens": answer})

    def summary(self, warmup: int) -> dict[str, Any]:
        """Rates over the steps after the first ``warmup`` (compile, allocator and cuBLAS warm-up)."""
        measured = self.steps[warmup:] if len(self.steps) > warmup else []
        seconds = sum(s["seconds"] for s in measured)
        if not seconds:
            return {"warmup_steps_excluded": warmup, "measured_steps": 0}
        tokens = sum(s["tokens"] for s in measured)
        return {
            "warmup_steps_excluded": warmup, "measured_steps": len(measured), "seconds": seconds,
            "tokens_per_second": tokens / seconds,
            "samples_4096_per_second": tokens / TOKENS_PER_SAMPLE / seconds,
            "examples_per_second": sum(s["examples"] for s in measured) / seconds,
        }


@functools.cache
def trainer_types() -> tuple[type, type]:
    """The recipe's ``Trainer`` subclass and step-timing callback (built on first use: importing
    transformers takes seconds, and the launcher's parent process never needs it)."""
    from transformers import Trainer, TrainerCallback

    class RecipeTrainer(Trainer):
        def __init__(self, *args: Any, answer_only_logits: bool, step_log: StepLog, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.answer_only_logits = answer_only_logits
            self.step_log = step_log

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            if model.training:
                self.step_log.add(inputs)
            if not self.answer_only_logits:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # The Trainer's own rule: the count of the whole accumulated batch only reaches the
            # loss when the model takes loss kwargs (it then skips dividing by the accumulation).
            scaled = self.model_accepts_loss_kwargs and num_items_in_batch is not None
            from training.packing import answer_only_loss

            loss, outputs = answer_only_loss(model, inputs, num_items_in_batch if scaled else None)
            if scaled and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    class StepTimer(TrainerCallback):
        def __init__(self, log: StepLog):
            self.log = log

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.log.begin()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.log.end(state.global_step)

    return RecipeTrainer, StepTimer


@dataclass
class FinetuneRecipe:
    run: RunSettings
    run_dir: Path
    # Pre-encoded records ({"train": [...], "eval": [...]}, each with input_ids and labels):
    # skip the tokenizer and data preparation (throughput runs). Fixed-length rows, or any
    # length with train.packing (then packed like prepared examples; no padding inside them).
    records: dict[str, list[dict[str, list[int]]]] | None = None

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoConfig, AutoModelForCausalLM, set_seed

        t = self.run.train
        if t.use_deepspeed:
            require_supported_optimizer(t.deepspeed_config)  # fail before loading 8B
        set_seed(t.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        model_path = self.run.model_path() if self.run.random_init_config is None else ""
        self.tokenizer: Any = None
        if self.records is None:
            self.tokenizer = load_tokenizer(self.run.tokenizer or model_path)
            self.split: Split = build_split(self.run, self.tokenizer)
        dtype = torch.bfloat16 if t.bf16 else torch.float32
        attn_impl = t.attn_implementation
        if t.packing:
            from training.packing import packed_attn_implementation

            attn_impl = packed_attn_implementation(attn_impl)
        attn = {} if attn_impl is None else {"attn_implementation": attn_impl}
        model: Any
        if self.run.random_init_config is not None:
            cfg = AutoConfig.from_pretrained(str(self.run.random_init_config))
            device = "cuda" if torch.cuda.is_available() else "cpu"
            with torch.device(device):  # random init on the GPU: seconds, not minutes, for 8B
                model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, **attn)
        else:
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, **attn)
        model.config.use_cache = False  # training: no KV cache to build
        if t.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        lora = self.run.lora
        self.model: Any = get_peft_model(model, LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
        ))
        if t.torch_compile:
            import torch._dynamo

            # Packed rows vary in length: one recompile marks the shapes dynamic; leave headroom.
            torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
            for layer in self.model.get_base_model().model.layers:
                layer.compile()
        self.step_log = StepLog()
        self.trainer = self._trainer()
        if self.records is None:
            self._write_manifests()

    def _datasets(self) -> tuple[list[dict[str, list[int]]], list[dict[str, list[int]]]]:
        """Train rows (packed when train.packing) and eval rows (one example each, as before)."""
        if self.records is not None:
            train, held = self.records["train"], self.records.get("eval") or []
        else:
            train, held = self.split.train.as_records(), self.split.held.as_records()
        if self.run.train.packing:
            from training.packing import pack_records

            self.examples = len(train)
            train = pack_records(train, self.run.data.max_length)
        return train, held

    def _trainer(self) -> Any:
        from transformers import TrainingArguments, default_data_collator

        t = self.run.train
        per_epoch = "epoch" if t.save_steps is None else "steps"
        args = TrainingArguments(
            output_dir=str(self.run_dir),
            num_train_epochs=t.epochs,
            max_steps=t.max_steps or -1,
            learning_rate=t.learning_rate,
            per_device_train_batch_size=t.micro_batch_size,
            per_device_eval_batch_size=t.micro_batch_size,
            gradient_accumulation_steps=t.grad_accum,
            warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
            lr_scheduler_type=t.lr_scheduler,
            weight_decay=t.weight_decay,
            save_strategy=per_epoch,
            eval_strategy=per_epoch,
            save_steps=t.save_steps or 500,
            eval_steps=t.save_steps,
            logging_steps=1,
            bf16=t.bf16,
            deepspeed=str(t.deepspeed_config) if t.use_deepspeed else None,
            seed=t.seed,
            report_to="none",
            save_only_model=False,  # keep the deepspeed optimizer state: runs resume exactly
            remove_unused_columns=False,
            prediction_loss_only=True,  # only eval_loss is read; never gather full-vocab logits
            disable_tqdm=False,
        )
        train, held = self._datasets()
        collator: Any
        if t.packing:
            from training.packing import flatten_batch

            collator = flatten_batch
        elif self.records is not None:
            collator = default_data_collator
        else:
            from training.data import pad_batch

            pad_id = self.tokenizer.pad_token_id
            collator = lambda features: pad_batch(features, pad_id)  # noqa: E731
        recipe_trainer, step_timer = trainer_types()
        return recipe_trainer(
            model=self.model,
            args=args,
            train_dataset=train,  # lists of dicts: the collator builds the tensors
            eval_dataset=held or None,
            data_collator=collator,
            callbacks=[step_timer(self.step_log)],
            answer_only_logits=t.answer_only_logits,
            step_log=self.step_log,
        )

    def _write_manifests(self) -> None:
        (self.run_dir / "settings.json").write_text(json.dumps(
            {**self.run.to_dict(), "model_id": self.run.model_id, "model_path": self.run.model_path()},
            indent=2,
        ))
        data = {**data_summary(self.split), **self._packing_stats()}
        (self.run_dir / "data.json").write_text(json.dumps(data, indent=2))

    def _packing_stats(self) -> dict[str, Any]:
        if not self.run.train.packing:
            return {}
        rows = self.trainer.train_dataset
        tokens = sum(len(r["input_ids"]) for r in rows)
        return {"packed": {"examples": self.examples, "rows": len(rows),
                           "fill": tokens / (len(rows) * self.run.data.max_length)}}

    # -- train ---------------------------------------------------------------------------------
    def train(self, resume: bool = False) -> dict[str, Any]:
        from transformers import trainer_utils

        last_checkpoint: Any = trainer_utils.get_last_checkpoint  # untyped upstream
        checkpoint = last_checkpoint(str(self.run_dir)) if resume else None
        result = self.trainer.train(resume_from_checkpoint=checkpoint)
        return dict(result.metrics)

    # -- save ----------------------------------------------------------------------------------
    def save(self, train_metrics: dict[str, Any]) -> Path:
        """The Trainer's log history (every loss, eval loss and speed) next to the checkpoints,
        with the per-step times and their rates past the warm-up steps."""
        log = {
            "base": self.run.base,
            "model_id": self.run.model_id,
            "train_metrics": train_metrics,
            "throughput": self.step_log.summary(warmup=3 if self.run.train.torch_compile else 1),
            "step_times": self.step_log.steps,
            "log_history": self.trainer.state.log_history,
            "checkpoints": sorted(p.name for p in self.run_dir.glob("checkpoint-*")),
        }
        path = self.run_dir / "train_log.json"
        path.write_text(json.dumps(log, indent=2))
        return path

    def ship(self, adapter_root: Path | None = None, version: str | None = None) -> Path:
        """The last checkpoint as ``<root>/<name>/<version>`` with its manifest, without the
        generation scoring of ``training.evaluate`` (its metrics: the Trainer's train and eval
        loss at that step). For runs evaluation cannot score, e.g. random weights."""
        from training.evaluate import RunFiles
        from training.manifest import write_adapter

        files = RunFiles.read(self.run_dir)  # needs save() first
        checkpoints = files.checkpoints()
        if not checkpoints:
            raise RuntimeError(f"{self.run_dir} has no checkpoint to ship")
        step, path = checkpoints[-1]
        previous = checkpoints[-2][0] if len(checkpoints) > 1 else 0
        scored = {
            "step": step, "checkpoint": path.name,
            "train_loss": files.train_loss_until(step, previous),
            "eval_loss": files.logged_at(step, "eval_loss"),
            "eval_samples_per_second": files.logged_at(step, "eval_samples_per_second"),
        }
        root = adapter_root or self.run.adapter_root
        return write_adapter(path, self.run, files.data["window"], scored, root, version)


def default_run_dir(run: RunSettings) -> Path:
    return run.runs_dir / run.base


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    run = settings_from_args(args)
    if not args.no_launch and run.train.use_deepspeed and "LOCAL_RANK" not in os.environ:
        # The launcher sets up the (single-process) distributed group deepspeed expects.
        cmd = launch_command(argv, free_port())
        os.execv(cmd[0], cmd)
    run_dir = args.run_dir or default_run_dir(run)
    if not args.resume:
        # A fresh run replaces the old run's checkpoints; --resume continues from them.
        for old in run_dir.glob("checkpoint-*"):
            shutil.rmtree(old)
    recipe = FinetuneRecipe(run, run_dir)
    recipe.setup()
    metrics = recipe.train(resume=args.resume)
    print(f"train log: {recipe.save(metrics)}")
    if args.ship:
        print(f"adapter: {recipe.ship(args.adapter_root, args.version)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
