"""The comparison report is built from the runs' logs alone: markdown, table, PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

from training.report import build_report


def fake_run(root: Path, base: str, mse: list[float]) -> Path:
    run = root / base
    run.mkdir(parents=True)
    history = [{"loss": 2.5 - 0.1 * s, "step": s, "epoch": s / 4} for s in range(1, 5)]
    history += [{"eval_loss": 2.7 - 0.05 * s, "eval_samples_per_second": 0.1, "step": s} for s in (2, 4)]
    (run / "train_log.json").write_text(json.dumps({"log_history": history, "train_metrics": {}}))
    section = {"rouge1": 0.2, "rouge2": 0.05, "rougeL": 0.15}
    checkpoints = [
        {"step": s, "checkpoint": f"checkpoint-{s}", "train_loss": 2.3, "eval_loss": 2.6,
         "eval_samples_per_second": 0.1, "generation_runtime": 30.0,
         "generation_samples_per_second": 0.2 if base == "llama" else 0.15, "mse": m,
         "binary_accuracy": 0.5, "rouge": dict.fromkeys(("positive", "concerns", "prediction_and_analysis"), section),
         "prediction_read": {"parsed": 1, "probed": 3, "unreadable": 0}, "samples": []}
        for s, m in zip((2, 4), mse, strict=True)
    ]
    best = min(checkpoints, key=lambda c: c["mse"])["checkpoint"]
    (run / "eval.json").write_text(json.dumps({
        "base": base, "model_id": "tiny", "stands_in_for": f"{base}-8b", "eval_rows": 4,
        "window": {"train_start": "2023-01-15", "train_end": "2023-09-24", "eval_start": "2023-10-22",
                   "eval_end": "2023-12-31", "weeks": 4, "train_rows": 8, "eval_rows": 4},
        "train_metrics": {"train_runtime": 120.0},
        "baselines": {"majority_bin": {"n": 4, "mse": 12.0, "binary_accuracy": 0.5},
                      "momentum": {"n": 4, "mse": 20.0, "binary_accuracy": 0.25}},
        "checkpoints": checkpoints, "best_checkpoint": best,
    }))
    return run


def test_report_from_two_runs(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path / "runs", "llama", [9.0, 4.0]), fake_run(tmp_path / "runs", "deepseek", [3.0, 5.0])]
    path = build_report(runs, tmp_path / "report")
    text = path.read_text()
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert len(pngs) >= 4
    assert {"loss_curves.png", "speed_vs_accuracy.png", "mse.png", "binary_accuracy.png", "rouge.png"} <= set(pngs)
    for png in pngs:
        assert f"({png})" in text
        assert (tmp_path / "report" / png).read_bytes()[:4] == b"\x89PNG"
    assert "| llama (tiny) | checkpoint-4 **(kept)** |" in text
    assert "| deepseek (tiny) | checkpoint-2 **(kept)** |" in text
    assert "| deepseek | momentum | 4 | 20.00 | 0.25 |" in text
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert [s["kept"]["checkpoint"] for s in summary] == ["checkpoint-4", "checkpoint-2"]
