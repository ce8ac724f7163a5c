"""The recipe on CPU without deepspeed: a tiny random Llama (8B-style random init from a config
file, the tiny model's tokenizer) trains a few steps with packing and answer-only logits, logs its
step times, and a run stopped at max_steps ships a servable adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from forecast.basemodels import BASES
from training.config import CONFIG_DIR, run_from_dict
from training.finetune import FinetuneRecipe, StepLog, parse_args, settings_from_args


@pytest.fixture(scope="module")
def random_init_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """An 8B-shaped config dir in miniature: a config.json and the tokenizer beside it."""
    from transformers import LlamaConfig

    path = tmp_path_factory.mktemp("llama-tiny-random")
    LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=2048,
                tie_word_embeddings=False).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_cli_flags_reach_the_settings(random_init_dir: Path) -> None:
    args = parse_args([
        "--config", str(CONFIG_DIR / "gpu_8b.json"), "--base", "llama",
        "--random-init-config", str(random_init_dir / "config.json"), "--tokenizer", str(random_init_dir),
        "--max-steps", "3", "--save-steps", "3", "--no-deepspeed", "--name", "throughput",
    ])
    run = settings_from_args(args)
    assert run.random_init_config == random_init_dir / "config.json" and run.tokenizer == str(random_init_dir)
    assert (run.train.max_steps, run.train.save_steps, run.train.use_deepspeed) == (3, 3, False)
    assert run.adapter_name == "throughput" and run.model_id == BASES["llama"].model_id
    assert run.train.packing and run.train.answer_only_logits  # the preset's recipe stays on


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, random_init_dir: Path) -> FinetuneRecipe:
    root = tmp_path_factory.mktemp("recipe")
    run = run_from_dict({
        "base": "llama",
        "random_init_config": str(random_init_dir / "config.json"),
        "tokenizer": str(random_init_dir),
        "adapter_root": str(root / "adapters"),
        "data": {"cutoff": "2023-10-01", "max_length": 2048, "train_rows": 6, "eval_rows": 2},
        "train": {"epochs": 1, "max_steps": 2, "learning_rate": 1e-3, "micro_batch_size": 1, "grad_accum": 2,
                  "warmup_ratio": 0.0, "lr_scheduler": "constant", "use_deepspeed": False,
                  "torch_compile": False, "packing": True, "answer_only_logits": True},
    })
    recipe = FinetuneRecipe(run, root / "run")
    recipe.setup()
    recipe.save(recipe.train())
    return recipe


def test_packed_answer_only_training_runs_and_logs_step_times(trained: FinetuneRecipe) -> None:
    from training.packing import PACKED_ATTENTION

    assert trained.model.get_base_model().config._attn_implementation == PACKED_ATTENTION
    data = json.loads((trained.run_dir / "data.json").read_text())
    assert data["packed"]["examples"] == 6 and data["packed"]["rows"] < 6  # ~1k-token examples, 2k rows
    log = json.loads((trained.run_dir / "train_log.json").read_text())
    losses = [e["loss"] for e in log["log_history"] if "loss" in e]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses)
    assert any("eval_loss" in e for e in log["log_history"])
    steps = log["step_times"]
    assert [s["step"] for s in steps] == [1, 2]
    assert all(s["seconds"] > 0 and s["tokens"] > s["answer_tokens"] > 0 and s["examples"] >= 2 for s in steps)
    assert log["throughput"]["measured_steps"] == 1 and log["throughput"]["samples_4096_per_second"] > 0
    assert log["checkpoints"] == ["checkpoint-2"]  # max_steps mid-epoch still saves


def test_a_run_stopped_at_max_steps_ships_a_servable_adapter(trained: FinetuneRecipe) -> None:
    from service.manifest import read_manifest

    dest = trained.ship(version="v1")
    assert dest == trained.run.adapter_root / "fingpt-llama" / "v1"
    manifest = read_manifest(trained.run.adapter_root, dest, "fingpt-llama", "v1")
    assert manifest.base_model == BASES["llama"].model_id  # what the 8B engine requires
    assert manifest.served_base == "llama" and manifest.metrics["step"] == 2
    assert manifest.metrics["train_loss"] > 0 and manifest.metrics["eval_loss"] > 0
    config = json.loads((dest / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == BASES["llama"].model_id


def test_step_log_counts_micro_batches_and_skips_warmup() -> None:
    import torch

    log = StepLog()
    for step in (1, 2, 3):
        log.begin()
        for _ in range(2):  # two micro-batches: a packed row of two examples each
            log.add({"input_ids": torch.zeros(1, 4096), "position_ids": torch.tensor([[*range(2048)] * 2]),
                     "labels": torch.full((1, 4096), -100)})
        log.end(step)
    assert [s["tokens"] for s in log.steps] == [8192] * 3 and [s["examples"] for s in log.steps] == [4] * 3
    summary = log.summary(warmup=1)
    assert summary["measured_steps"] == 2
    assert summary["samples_4096_per_second"] == pytest.approx(4 / summary["seconds"])
