"""Comparison report of evaluated runs: markdown + PNG plots + a summary JSON.

    python -m training report var/runs/cpu/llama var/runs/cpu/deepseek --out reports/cpu

Reads each run's ``train_log.json`` and ``eval.json`` (nothing is re-measured) and writes
``report.md``, ``summary.json`` and the plots: loss curves, one plot per metric across
checkpoints, ROUGE per section, and speed vs accuracy of the kept checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from forecast.basemodels import adapter_name

SECTIONS = ("positive", "concerns", "prediction_and_analysis")
PER_CHECKPOINT = (
    ("mse", "MSE (bin midpoints, %²)"),
    ("binary_accuracy", "binary accuracy"),
    ("eval_loss", "eval loss"),
    ("eval_samples_per_second", "eval samples/s (Trainer eval loss pass)"),
    ("generation_runtime", "generation runtime per checkpoint (s)"),
)


def load_run(run_dir: Path) -> dict[str, Any]:
    ev = json.loads((run_dir / "eval.json").read_text())
    log = json.loads((run_dir / "train_log.json").read_text())
    return {"dir": str(run_dir), "eval": ev, "log": log["log_history"], "base": ev["base"]}


def plot_losses(runs: list[dict[str, Any]], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        train = [(e["step"], e["loss"]) for e in run["log"] if "loss" in e]
        evals = [(e["step"], e["eval_loss"]) for e in run["log"] if "eval_loss" in e]
        if train:
            ax.plot(*zip(*train, strict=True), marker=".", label=f"{run['base']} train")
        if evals:
            ax.plot(*zip(*evals, strict=True), marker="o", linestyle="--", label=f"{run['base']} eval")
    ax.set(xlabel="optimizer step", ylabel="loss (answer tokens only)", title="Loss curves")
    ax.legend()
    return _save(fig, out / "loss_curves.png")


def plot_metric(runs: list[dict[str, Any]], key: str, label: str, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for run in runs:
        points = [(c["step"], c[key]) for c in run["eval"]["checkpoints"] if c.get(key) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=run["base"])
    if key in ("mse", "binary_accuracy"):  # each base's slice has its own baselines
        for run in runs:
            for name, score in run["eval"]["baselines"].items():
                ax.axhline(score[key], linestyle=":", linewidth=1, color="grey")
                ax.annotate(f"{run['base']} {name}", (ax.get_xlim()[0], score[key]), fontsize=6, color="grey")
    ax.set(xlabel="checkpoint step", ylabel=label, title=f"{label} per checkpoint")
    ax.legend()
    return _save(fig, out / f"{key}.png")


def plot_rouge(runs: list[dict[str, Any]], out: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for ax, section in zip(axes, SECTIONS, strict=True):
        for run in runs:
            for kind, style in (("rouge1", "-"), ("rouge2", ":"), ("rougeL", "--")):
                pts = [(c["step"], c["rouge"][section][kind]) for c in run["eval"]["checkpoints"]]
                ax.plot(*zip(*pts, strict=True), linestyle=style, marker="o", label=f"{run['base']} {kind}")
        ax.set(title=section, xlabel="checkpoint step")
    axes[0].set_ylabel("ROUGE F1")
    axes[-1].legend(fontsize=7)
    return _save(fig, out / "rouge.png")


def plot_speed_vs_accuracy(runs: list[dict[str, Any]], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        best = kept(run)
        x, y = best["generation_samples_per_second"], best["binary_accuracy"]
        ax.scatter([x], [y], s=80, label=f"{run['base']} ({best['checkpoint']}, MSE {best['mse']:.2f})")
        ax.annotate(run["base"], (x, y), textcoords="offset points", xytext=(6, 6))
    ax.set(xlabel="generation samples/s (greedy, batched)", ylabel="binary accuracy",
           title="Speed vs accuracy of the kept checkpoints")
    ax.legend(fontsize=8)
    return _save(fig, out / "speed_vs_accuracy.png")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def kept(run: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in run["eval"]["checkpoints"] if c["checkpoint"] == run["eval"]["best_checkpoint"])


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(runs: list[dict[str, Any]]) -> str:
    head = (
        "| base (model trained) | checkpoint | train loss | eval loss | eval samples/s | "
        "ROUGE-1 pos / con / P&A | ROUGE-2 P&A | ROUGE-L P&A | MSE | binary acc | train runtime s | "
        "gen runtime s | bins parsed / probed / unreadable |\n|" + "---|" * 13 + "\n"
    )
    rows = []
    for run in runs:
        ev = run["eval"]
        for c in ev["checkpoints"]:
            mark = " **(kept)**" if c["checkpoint"] == ev["best_checkpoint"] else ""
            r = c["rouge"]
            read = c["prediction_read"]
            rows.append(
                f"| {run['base']} ({ev['model_id']}) | {c['checkpoint']}{mark} | {_f(c['train_loss'])} | "
                f"{_f(c['eval_loss'])} | {_f(c['eval_samples_per_second'])} | "
                f"{' / '.join(_f(r[s]['rouge1'], 2) for s in SECTIONS)} | "
                f"{_f(r['prediction_and_analysis']['rouge2'], 2)} | {_f(r['prediction_and_analysis']['rougeL'], 2)} | "
                f"{_f(c['mse'], 2)} | {_f(c['binary_accuracy'], 2)} | "
                f"{_f(ev['train_metrics'].get('train_runtime'), 0)} | {_f(c['generation_runtime'], 0)} | "
                f"{read['parsed']} / {read['probed']} / {read['unreadable']} |"
            )
    return head + "\n".join(rows) + "\n"


def baselines_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| base | baseline | n | MSE | binary acc |", "|---|---|---|---|---|"]
    for run in runs:
        for name, s in run["eval"]["baselines"].items():
            lines.append(
                f"| {run['base']} | {name} | {s['n']} | {s['mse']:.2f} | {s['binary_accuracy']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def window_line(run: dict[str, Any]) -> str:
    w = run["eval"]["window"]
    return (
        f"- {run['base']} data window: train {w['train_start']} .. {w['train_end']} "
        f"({w['train_rows']} rows), held back {w['eval_start']} .. {w['eval_end']} "
        f"({w['eval_rows']} rows), up to {w['weeks']} weeks of history per prompt."
    )


def build_report(run_dirs: list[Path], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    runs = [load_run(d) for d in run_dirs]
    plots = [plot_losses(runs, out), plot_rouge(runs, out), plot_speed_vs_accuracy(runs, out)]
    plots += [plot_metric(runs, key, label, out) for key, label in PER_CHECKPOINT]
    first = runs[0]["eval"]
    window = first["window"]
    lines = [
        "# Training comparison: " + " vs ".join(adapter_name(r["base"]) for r in runs),
        "",
        "Generated by `python -m training report` from " + ", ".join(f"`{r['dir']}`" for r in runs) + ".",
        "",
        *[
            f"- {r['base']}: trained `{r['eval']['model_id']}`"
            + (f", standing in for `{r['eval']['stands_in_for']}` (same chat format)."
               if r["eval"].get("stands_in_for") else ".")
            for r in runs
        ],
        *[window_line(r) for r in runs],
        "- Each base's slice is the rows that fit `max_length` in *its* chat format, spread over "
        "the dates, so the slices (and their baselines) can differ between bases.",
        *(
            [
                "- **Read these as pipeline numbers**: a 135M stand-in model, "
                f"{window['train_rows']} training rows and a few optimizer steps on a shared CPU. "
                "They show that every stage runs and is measured, not how the 8B adapters score. "
                "Both bases are the same small model here, so their speed gap is machine load, "
                "not architecture.",
            ]
            if any(r["eval"].get("stands_in_for") for r in runs) else []
        ),
        "- Kept checkpoint per base: the MSE minimum (ties: lower eval loss, then earlier step).",
        "- Bins `probed`: the generation ended before its `Prediction:` line, so the header was "
        "appended and the bin is the bin phrase the model scores highest there (constrained "
        "decoding); `unreadable` rows (probe off) count as `U1`.",
        "",
        "## Per checkpoint",
        "",
        table(runs),
        "## Naive baselines on each base's held-back rows",
        "",
        baselines_table(runs),
        "## Plots",
        "",
        *[f"![{p.stem}]({p.name})" for p in plots],
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    summary = [{"base": r["base"], "kept": kept(r), "baselines": r["eval"]["baselines"],
                "train_metrics": r["eval"]["train_metrics"], "window": r["eval"]["window"]} for r in runs]
    for s in summary:
        s["kept"] = {k: v for k, v in s["kept"].items() if k != "samples"}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return path
