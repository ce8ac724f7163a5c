"""The training pipeline: dataset → fine-tune (deepspeed) → evaluate every checkpoint → keep the
MSE minimum → adapter + manifest → comparison report.

    python -m training one  --base llama [--config training/configs/cpu_tiny.json]
    python -m training all [--config ...] [--report-dir reports/cpu]
    python -m training report var/runs/cpu/llama var/runs/cpu/deepseek --out reports/cpu
    python -m training search --trials 3
    python -m training all --config cpu_tiny --dry-run   # validate, build the dataset: JSON

``--config`` takes a path or the name of a shipped preset (``cpu_tiny``, ``gpu_8b``, ...).

Each fine-tune runs in its own ``deepspeed --num_gpus 1`` process (``training.finetune.launch``;
the module re-executes itself under the launcher); evaluation and the report run in this process.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from forecast.basemodels import BASES
from training.config import CONFIG_DIR, load_run, resolve_preset
from training.evaluate import evaluate_run
from training.finetune import default_run_dir, dry_run, launch

CPU_PRESET = CONFIG_DIR / "cpu_tiny.json"


def run_base(
    config: Path | None, base: str, *, run_dir: Path | None = None, adapter_root: Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train one base, score its checkpoints, write its adapter; the evaluation report."""
    run = load_run(config, base=base)
    run_dir = run_dir or default_run_dir(run)
    launch(config, base, run_dir, resume)
    return evaluate_run(run_dir, adapter_root)


def run_bases(
    config: Path | None, *, runs_dir: Path | None = None, adapter_root: Path | None = None,
    report_dir: Path | None = None, resume: bool = False,
) -> list[Path]:
    """Every base of ``BASES``, one after the other, then the comparison report (when
    ``report_dir``)."""
    run_dirs = []
    for base in BASES:
        run = load_run(config, base=base)
        run_dir = (runs_dir / base) if runs_dir else default_run_dir(run)
        run_base(config, base, run_dir=run_dir, adapter_root=adapter_root, resume=resume)
        run_dirs.append(run_dir)
    if report_dir is not None:
        from training.report import build_report

        build_report(run_dirs, report_dir)
    return run_dirs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    one = sub.add_parser("one", help="train, evaluate and ship one base")
    one.add_argument("--base", choices=sorted(BASES), required=True)
    every = sub.add_parser(
        "all", aliases=["both"], help="train, evaluate and ship every base, then report"
    )
    every.add_argument("--report-dir", type=Path)
    for cmd in (one, every):
        cmd.add_argument("--resume", action="store_true", help="continue from the last checkpoints")
        cmd.add_argument("--config", type=resolve_preset, default=None,
                         help="preset path or shipped name (default: 8B recipe)")
        cmd.add_argument("--adapter-root", type=Path)
        cmd.add_argument("--dry-run", action="store_true",
                         help="validate the preset and build the dataset; print it; train nothing")
    rep = sub.add_parser("report", help="comparison report from evaluated run directories")
    rep.add_argument("run_dirs", type=Path, nargs="+")
    rep.add_argument("--out", type=Path, default=Path("reports/cpu"))
    search = sub.add_parser("search", help="Optuna search over LoRA rank/alpha, lr, epochs")
    search.add_argument("--trials", type=int, default=3)
    search.add_argument("--config", type=resolve_preset, default=None)
    search.add_argument("--storage", type=Path, default=None)
    search.add_argument("--study", default=None)
    args = p.parse_args(argv)

    if args.command in ("one", "all", "both") and args.dry_run:
        bases = [args.base] if args.command == "one" else list(BASES)
        plans = {base: dry_run(load_run(args.config, base=base)) for base in bases}
        print(json.dumps(plans))  # one line, the last: libraries log to stdout before it
    elif args.command == "one":
        report = run_base(args.config, args.base, adapter_root=args.adapter_root, resume=args.resume)
        print(f"{args.base}: kept {report['best_checkpoint']} → {report['adapter_dir']}")
    elif args.command in ("all", "both"):
        dirs = run_bases(
            args.config, adapter_root=args.adapter_root, report_dir=args.report_dir, resume=args.resume
        )
        print("runs:", *map(str, dirs))
    elif args.command == "report":
        from training.report import build_report

        print(build_report(args.run_dirs, args.out))
    else:
        from training.search import run_search

        run_search(args.trials, config=args.config, storage=args.storage, study_name=args.study)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
