"""Optuna search over LoRA rank, alpha, learning rate and epochs, minimizing eval MSE.

    python -m training search --trials 3 [--config training/configs/search_tiny.json]

Each trial is a real pipeline run (deepspeed fine-tune → per-checkpoint evaluation → the MSE
minimum) in ``<runs_dir>/<study>/trial-NNN``; its objective is that kept checkpoint's MSE, with eval
loss, binary accuracy and the kept step stored as trial attributes. The study lives in SQLite
(``var/search/study.sqlite3`` by default), so a rerun continues it instead of starting over;
a trial whose fine-tune fails is recorded as failed and the search goes on.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from training.config import CONFIG_DIR, load_run
from training.evaluate import evaluate_run
from training.finetune import launch

SEARCH_PRESET = CONFIG_DIR / "search_tiny.json"
DEFAULT_STORAGE = Path("var/search/study.sqlite3")
RANKS = (4, 8, 16)
ALPHAS = (8, 16, 32)


def suggest(trial: Any) -> dict[str, Any]:
    """The search space: FinGPT's r=8, alpha=16, lr 5e-5 sit inside it."""
    return {
        "r": trial.suggest_categorical("r", list(RANKS)),
        "alpha": trial.suggest_categorical("alpha", list(ALPHAS)),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        "epochs": trial.suggest_int("epochs", 1, 2),
    }


def trial_config(raw: dict[str, Any], params: dict[str, Any], trial_dir: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(json.dumps(raw))
    config["runs_dir"] = str(trial_dir)
    config.setdefault("lora", {}).update(r=params["r"], alpha=params["alpha"])
    config.setdefault("train", {}).update(
        learning_rate=params["learning_rate"], epochs=params["epochs"]
    )
    return config


def make_objective(raw: dict[str, Any], base: str, search_dir: Path) -> Any:
    def objective(trial: Any) -> float:
        params = suggest(trial)
        trial_dir = search_dir / f"trial-{trial.number:03d}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        config = trial_dir / "config.json"
        config.write_text(json.dumps(trial_config(raw, params, trial_dir), indent=2))
        load_run(config, base=base)  # a bad space fails here, before any launch
        run_dir = trial_dir / base
        launch(config, base, run_dir)
        report = evaluate_run(run_dir, adapter_root=trial_dir / "adapters", version="v1")
        kept = next(c for c in report["checkpoints"] if c["checkpoint"] == report["best_checkpoint"])
        for key in ("eval_loss", "binary_accuracy", "checkpoint", "train_loss"):
            trial.set_user_attr(key, kept[key])
        return float(kept["mse"])

    return objective


def run_search(
    trials: int, *, config: Path | None = None, storage: Path | None = None,
    study_name: str | None = None, base: str = "llama", seed: int = 0,
) -> Any:
    import optuna

    config = config or SEARCH_PRESET
    raw = json.loads(config.read_text())
    storage = storage or DEFAULT_STORAGE
    storage.parent.mkdir(parents=True, exist_ok=True)
    study_name = study_name or f"fingpt-{base}-{config.stem}"
    search_dir = Path(raw.get("runs_dir", "var/search/runs")) / study_name  # trial dirs per study
    study = optuna.create_study(
        study_name=study_name,
        storage=f"sqlite:///{storage}",
        direction="minimize",
        load_if_exists=True,  # the persistent study: a rerun adds trials to it
        sampler=optuna.samplers.TPESampler(seed=seed),
    )
    study.optimize(
        make_objective(raw, base, search_dir), n_trials=trials,
        catch=(subprocess.CalledProcessError,), show_progress_bar=True,
    )
    summary = summarize(study)
    (search_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["best"], indent=2))
    return study


def summarize(study: Any) -> dict[str, Any]:
    done = [t for t in study.trials if t.value is not None]
    best = study.best_trial if done else None
    return {
        "study": study.study_name,
        "trials": [
            {"number": t.number, "state": t.state.name, "mse": t.value, "params": t.params,
             **t.user_attrs}
            for t in study.trials
        ],
        "best": None if best is None else {"number": best.number, "mse": best.value,
                                           "params": best.params, **best.user_attrs},
    }
