"""Score the release adapters trained on the GPU with this machine's engine, as the training
pipeline scores a checkpoint, and ship them.

    python benchmarks/gpu/rescore_release.py RELEASE_TAR_GZ [--max-new-tokens 768]

``release_device.sh release`` trains each base's release adapter on the GPU
(``training/configs/release_tiny.json``) and brings back the kept adapter, its training log
and the report. Here each base's run directory is rebuilt from the preset (settings, the
date split re-derived and checked by ``training.evaluate``), the kept adapter as its one
checkpoint, then ``training.evaluate.evaluate_run`` generates the held-back answers through
vLLM under the answer expression, scores the six metrics and writes the adapter with its
manifest under ``service/release_adapters``; ``training.report`` writes ``reports/release``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from forecast.basemodels import BASES  # noqa: E402
from training.config import load_run  # noqa: E402
from training.data import prepare_split  # noqa: E402

PRESET = ROOT / "training" / "configs" / "release_tiny.json"


def rebuild_run(base: str, unpacked: Path, runs: Path) -> Path:
    from transformers import AutoTokenizer

    run = load_run(PRESET, base=base)
    run_dir = runs / base
    kept = json.loads((unpacked / "adapters" / f"fingpt-{base}" / "v1" / "adapter.json").read_text())
    checkpoint = run_dir / kept["metrics"]["checkpoint"]
    shutil.copytree(unpacked / "adapters" / f"fingpt-{base}" / "v1", checkpoint, ignore=shutil.ignore_patterns("adapter.json"))
    model_path = run.model_path()
    (run_dir / "settings.json").write_text(json.dumps({**run.to_dict(), "model_id": run.model_id, "model_path": model_path}))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    split = prepare_split(run.data, tokenizer, run.base_model.chat_format)
    (run_dir / "data.json").write_text(json.dumps({
        "window": split.window(), "train_keys": [e.key for e in split.train.examples],
        "eval_keys": [e.key for e in split.held.examples], "trained_on": "GPU (benchmarks/gpu/release_device.sh)",
    }))
    shutil.copy(unpacked / "report" / f"train_log_{base}.json", run_dir / "train_log.json")
    return run_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tarball", type=Path)
    p.add_argument("--max-new-tokens", type=int, default=768)
    p.add_argument("--runs", type=Path, default=ROOT / "var" / "runs" / "release")
    p.add_argument("--adapter-root", type=Path, default=ROOT / "service" / "release_adapters")
    p.add_argument("--report", type=Path, default=ROOT / "reports" / "release")
    args = p.parse_args()
    from training.evaluate import evaluate_run
    from training.report import build_report

    shutil.rmtree(args.runs, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(args.tarball) as tar:
            tar.extractall(tmp, filter="data")
        run_dirs = [rebuild_run(base, Path(tmp), args.runs) for base in BASES]
        for run_dir in run_dirs:
            run = load_run(PRESET, base=run_dir.name)
            settings = dataclasses.replace(
                run.eval, max_new_tokens=args.max_new_tokens, structured_output_backend="auto", enforce_eager=None,
            )
            shutil.rmtree(args.adapter_root / f"fingpt-{run_dir.name}" / "v1", ignore_errors=True)
            evaluate_run(run_dir, args.adapter_root, "v1", settings)
        print(build_report(run_dirs, args.report))


if __name__ == "__main__":
    main()
