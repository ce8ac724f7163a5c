"""The adapter artifact: files, manifest fields (the service contract), immutable versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.config import CONFIG_DIR, load_run
from training.evaluate import pick_best
from training.manifest import ADAPTER_FILES, next_version, read_manifest, write_adapter

WINDOW = {"train_start": "2023-01-15", "train_end": "2023-09-24", "eval_start": "2023-10-22",
          "eval_end": "2023-12-31", "weeks": 4, "train_rows": 8, "eval_rows": 4}
SCORED = {"step": 2, "checkpoint": "checkpoint-2", "train_loss": 2.2, "eval_loss": 2.6,
          "eval_samples_per_second": 0.1, "mse": 9.5, "binary_accuracy": 0.5,
          "rouge": {"positive": {"rouge1": 0.1, "rouge2": 0.0, "rougeL": 0.1}},
          "prediction_read": {"parsed": 0, "probed": 4, "unreadable": 0}, "samples": ["big"]}


def fake_checkpoint(tmp_path: Path) -> Path:
    ckpt = tmp_path / "run" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/local/path", "r": 8}))
    (ckpt / "adapter_model.safetensors").write_bytes(b"weights")
    (ckpt / "optimizer_state.pt").write_bytes(b"not shipped")
    return ckpt


def test_write_adapter_layout_and_manifest(tmp_path: Path) -> None:
    run = load_run(CONFIG_DIR / "cpu_tiny.json", base="deepseek")
    root = tmp_path / "adapters"
    dest = write_adapter(fake_checkpoint(tmp_path), run, WINDOW, SCORED, root)
    assert dest == root / "fingpt-deepseek" / "v1"
    assert sorted(p.name for p in dest.iterdir()) == sorted([*ADAPTER_FILES, "adapter.json"])
    m = read_manifest(dest)
    assert m["name"] == "fingpt-deepseek" and m["version"] == "v1"
    assert m["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert m["stands_in_for"] == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
    assert (m["served_base"], m["chat_format"]) == ("deepseek", "deepseek-r1")
    assert m["lora"] == {"r": 8, "alpha": 16, "dropout": 0.1,
                         "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    assert m["data_window"] == {k: WINDOW[k] for k in ("train_start", "train_end", "eval_start", "eval_end", "weeks")}
    assert m["metrics"]["mse"] == 9.5 and "samples" not in m["metrics"]
    assert {"eval_loss", "binary_accuracy", "rouge", "eval_samples_per_second"} <= set(m["metrics"])
    assert m["code_revision"] and m["created_at"].endswith("+00:00")
    config = json.loads((dest / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_versions_increase_and_never_overwrite(tmp_path: Path) -> None:
    run = load_run(CONFIG_DIR / "cpu_tiny.json", base="llama")
    root = tmp_path / "adapters"
    ckpt = fake_checkpoint(tmp_path)
    assert next_version(root, "fingpt-llama") == "v1"
    write_adapter(ckpt, run, WINDOW, SCORED, root)
    assert write_adapter(ckpt, run, WINDOW, SCORED, root).name == "v2"
    with pytest.raises(FileExistsError):
        write_adapter(ckpt, run, WINDOW, SCORED, root, version="v1")
    assert not list((root / "fingpt-llama").glob(".*tmp"))


def test_the_mse_minimum_is_kept_ties_to_eval_loss_then_step() -> None:
    rows = [
        {"step": 1, "mse": 9.0, "eval_loss": 2.5, "checkpoint": "a"},
        {"step": 2, "mse": 4.0, "eval_loss": 2.6, "checkpoint": "b"},
        {"step": 3, "mse": 4.0, "eval_loss": 2.4, "checkpoint": "c"},
        {"step": 4, "mse": 4.0, "eval_loss": 2.4, "checkpoint": "d"},
    ]
    assert pick_best(rows)["checkpoint"] == "c"
