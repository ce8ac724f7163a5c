"""LoRA fine-tune recipe: setup → train → save, one base per run, under the deepspeed launcher.

    python -m training.finetune --config training/configs/cpu_tiny.json --base llama

re-executes itself as ``deepspeed --num_gpus 1 --module training.finetune ...`` (pass
``--no-launch`` to run in the current process, as the launcher's worker does). The run
directory holds the Trainer checkpoints (``checkpoint-N``: peft adapter + deepspeed state, so
``--resume`` picks up where a killed run stopped), ``settings.json``, ``data.json`` (which rows
trained and which are held back) and ``train_log.json`` (the Trainer's log history: train and
eval loss, eval samples/s, runtimes). ``training.evaluate`` then scores every checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.config import RunSettings, require_supported_optimizer, run_from_dict

if TYPE_CHECKING:
    from training.data import Split


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="training.finetune", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, help="a preset under training/configs (default: 8B recipe)")
    p.add_argument("--base", choices=["llama", "deepseek"], help="which base to train")
    p.add_argument("--model", help="'tiny', a local path or a model id (default: the base's 8B id)")
    p.add_argument("--deepspeed-config", help="override train.deepspeed_config")
    p.add_argument("--run-dir", type=Path, help="default: <runs_dir>/<base>")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--no-launch", action="store_true", help="do not re-exec under deepspeed")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    raw = json.loads(args.config.read_text()) if args.config else {}
    if args.base:
        raw["base"] = args.base
    if args.model:
        raw["model"] = args.model
    if args.deepspeed_config:
        raw.setdefault("train", {})["deepspeed_config"] = args.deepspeed_config
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


@dataclass
class FinetuneRecipe:
    run: RunSettings
    run_dir: Path
    # Pre-encoded, fixed-length records ({"train": [...], "eval": [...]}, each with input_ids,
    # labels, attention_mask): skip the tokenizer and data preparation (throughput runs).
    records: dict[str, list[dict[str, list[int]]]] | None = None

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, set_seed

        t = self.run.train
        if t.use_deepspeed:
            require_supported_optimizer(t.deepspeed_config)  # fail before loading 8B
        set_seed(t.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fmt = self.run.base_model.chat_format
        model_path = self.run.model_path() if self.run.random_init_config is None else ""
        self.tokenizer: Any = None
        if self.records is None:
            from training.data import prepare_split
            from training.teacher import TeacherSettings, teacher_from_settings

            self.tokenizer = AutoTokenizer.from_pretrained(self.run.tokenizer or model_path)
            if self.tokenizer.pad_token_id is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            teacher = teacher_from_settings(TeacherSettings())
            self.split: Split = prepare_split(self.run.data, self.tokenizer, fmt, teacher)
        dtype = torch.bfloat16 if t.bf16 else torch.float32
        attn = {} if t.attn_implementation is None else {"attn_implementation": t.attn_implementation}
        model: Any
        if self.run.random_init_config is not None:
            cfg = AutoConfig.from_pretrained(str(self.run.random_init_config))
            device = "cuda" if torch.cuda.is_available() else "cpu"
            with torch.device(device):  # random init on the GPU: seconds, not minutes, for 8B
                model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, **attn)
        else:
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, **attn)
        if t.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        lora = self.run.lora
        self.model: Any = get_peft_model(model, LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
        ))
        if t.torch_compile:
            for layer in self.model.get_base_model().model.layers:
                layer.compile()
        self.trainer = self._trainer()
        if self.records is None:
            self._write_manifests()

    def _trainer(self) -> Any:
        from transformers import Trainer, TrainingArguments, default_data_collator

        t = self.run.train
        per_epoch = "epoch" if t.save_steps is None else "steps"
        args = TrainingArguments(
            output_dir=str(self.run_dir),
            num_train_epochs=t.epochs,
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
            disable_tqdm=False,
        )
        if self.records is not None:
            return Trainer(
                model=self.model,
                args=args,
                train_dataset=self.records["train"],
                eval_dataset=self.records.get("eval") or None,
                data_collator=default_data_collator,
            )
        from datasets import Dataset

        from training.data import pad_batch

        pad_id = self.tokenizer.pad_token_id
        return Trainer(
            model=self.model,
            args=args,
            train_dataset=Dataset.from_list(self.split.train.as_records()),
            eval_dataset=Dataset.from_list(self.split.held.as_records()),
            data_collator=lambda features: pad_batch(features, pad_id),
        )

    def _write_manifests(self) -> None:
        (self.run_dir / "settings.json").write_text(json.dumps(
            {**self.run.to_dict(), "model_id": self.run.model_id, "model_path": self.run.model_path()},
            indent=2,
        ))
        data = {
            "window": self.split.window(),
            "train_keys": [e.key for e in self.split.train.examples],
            "eval_keys": [e.key for e in self.split.held.examples],
            "skipped_too_long": {"train": self.split.train.skipped, "eval": self.split.held.skipped},
            "news_dropped": sum(e.dropped_news for e in self.split.train.encoded),
            "unanswered_market_rows": self.split.unanswered,
            "train_tokens": sum(len(e.input_ids) for e in self.split.train.encoded),
            "answer_tokens": sum(len(e.input_ids) - e.prompt_tokens for e in self.split.train.encoded),
        }
        (self.run_dir / "data.json").write_text(json.dumps(data, indent=2))

    # -- train ---------------------------------------------------------------------------------
    def train(self, resume: bool = False) -> dict[str, Any]:
        from transformers import trainer_utils

        last_checkpoint: Any = trainer_utils.get_last_checkpoint  # untyped upstream
        checkpoint = last_checkpoint(str(self.run_dir)) if resume else None
        result = self.trainer.train(resume_from_checkpoint=checkpoint)
        return dict(result.metrics)

    # -- save ----------------------------------------------------------------------------------
    def save(self, train_metrics: dict[str, Any]) -> Path:
        """The Trainer's log history (every loss, eval loss and speed) next to the checkpoints."""
        log = {
            "base": self.run.base,
            "model_id": self.run.model_id,
            "train_metrics": train_metrics,
            "log_history": self.trainer.state.log_history,
            "checkpoints": sorted(p.name for p in self.run_dir.glob("checkpoint-*")),
        }
        path = self.run_dir / "train_log.json"
        path.write_text(json.dumps(log, indent=2))
        return path


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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
