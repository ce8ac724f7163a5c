"""The Optuna search: space applied to the preset, MSE objective, a study persisted in SQLite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training import search
from training.config import load_run


def test_trial_config_applies_the_space(tmp_path: Path) -> None:
    raw = json.loads(search.SEARCH_PRESET.read_text())
    params = {"r": 16, "alpha": 32, "learning_rate": 2e-4, "epochs": 2}
    config = tmp_path / "c.json"
    config.write_text(json.dumps(search.trial_config(raw, params, tmp_path / "trial-000")))
    run = load_run(config, base="deepseek")
    assert (run.lora.r, run.lora.alpha, run.train.learning_rate, run.train.epochs) == (16, 32, 2e-4, 2)
    assert run.runs_dir == tmp_path / "trial-000" and run.model == "tiny"
    assert "lora" not in raw  # the preset itself is left untouched


def test_study_minimizes_mse_and_persists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def fake_train(config: Path, base: str, run_dir: Path, resume: bool = False) -> None:
        calls.append(run_dir)

    def fake_evaluate(run_dir: Path, adapter_root: Path | None = None, version: str | None = None) -> dict[str, Any]:
        cfg = json.loads((run_dir.parent / "config.json").read_text())
        mse = abs(cfg["train"]["learning_rate"] - 3e-4) * 1e4 + cfg["lora"]["r"] / 16
        kept = {"checkpoint": "checkpoint-2", "mse": mse, "eval_loss": 2.0, "binary_accuracy": 0.5, "train_loss": 2.1}
        return {"checkpoints": [kept], "best_checkpoint": "checkpoint-2"}

    monkeypatch.setattr(search, "launch", fake_train)
    monkeypatch.setattr(search, "evaluate_run", fake_evaluate)
    preset = tmp_path / "preset.json"
    raw = json.loads(search.SEARCH_PRESET.read_text())
    preset.write_text(json.dumps({**raw, "runs_dir": str(tmp_path / "runs")}))
    storage = tmp_path / "study.sqlite3"

    study = search.run_search(3, config=preset, storage=storage, study_name="t")
    assert len(study.trials) == 3 and len(calls) == 3
    again = search.run_search(2, config=preset, storage=storage, study_name="t")
    assert len(again.trials) == 5  # continued, not restarted
    summary = json.loads((tmp_path / "runs" / "t" / "summary.json").read_text())
    assert summary["best"]["mse"] == min(t["mse"] for t in summary["trials"])
    assert set(summary["best"]["params"]) == {"r", "alpha", "learning_rate", "epochs"}
