"""Speed vs accuracy per adapter version, through the service, on the evaluation weeks.

    python benchmarks/speed_accuracy.py [--start 2023-10-22] [--end 2023-12-17] \
        [--tickers AAPL MSFT KO JPM] [--adapters fingpt-llama@v2 ...] [--max-new-tokens 64]

The real service (in process, over real vLLM CPU engines, one per base) forecasts every
(evaluation week, ticker) with each adapter version in turn, through ``POST /v1/forecast``
exactly as the backfill does (``service.backfill.replay``): prompt from the bundled snapshot,
engine, parse (a cut-off answer gets its bin probed), forecast log. The wall time of each
version's replay gives forecasts/s; the scorer then fills the realized returns and the
version's scorecard gives binary accuracy, MSE (bin midpoints), parsed/probed counts, mean
latency and tokens/s. The naive baselines are scored on the same (week, ticker) labels.
Next to each accuracy, its Wilson 95% interval; next to each MSE, a percentile-bootstrap 95%
interval over the per-forecast squared errors (seeded, ``--seed``), so a reader sees which
differences are noise.

Default: every version on disk under ``--adapter-root`` (the trained ones, and the untrained
``v0`` stand-ins as a reference), and the weeks the training held back (2023-10-22 ..
2023-12-17), so the trained versions are scored out of sample. A fresh forecast log per run.
Writes benchmarks/results/speed_accuracy.json and .png and prints the table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from clients.errors import ConflictError
from clients.retry import NO_RETRY
from forecast.basemodels import BASES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, WORK, machine  # noqa: E402

TICKERS = ["AAPL", "MSFT", "KO", "JPM"]


def baselines(
    tickers: list[str], weeks: list[dt.date], train: tuple[dt.date, dt.date], seed: int = 0
) -> dict[str, Any]:
    """The naive baselines on the same (week, ticker) labels the adapters are scored on."""
    from forecast.bins import Bin
    from forecast.metrics import majority_bin, naive_baselines, squared_errors
    from forecast.providers.snapshot import SnapshotMarketData
    from forecast.windows import WEEK, weekly_labels

    market = SnapshotMarketData()
    labels, last_week, train_labels = [], [], []
    for ticker in tickers:
        series = dict(weekly_labels(market, ticker, weeks[0] - WEEK, weeks[-1] + WEEK))
        for week in weeks:
            labels.append(series[week])
            last_week.append(series[week - WEEK])
        train_labels += [b for _, b in weekly_labels(market, ticker, *train)]
    scores = naive_baselines(labels, last_week, train_labels)
    predictions = {  # the same predictions naive_baselines scored, for the per-row errors
        "majority_bin": [majority_bin(train_labels)] * len(labels),
        "always_up_0_1": [Bin.U1] * len(labels),
        "momentum": list(last_week),
    }
    return {
        name: {"n": s.n, "binary_accuracy": s.binary_accuracy, "mse": s.mse,
               **intervals(s.n, s.binary_accuracy, squared_errors(predictions[name], labels), seed)}
        for name, s in scores.items()
    }  # fmt: skip


def intervals(n: int, accuracy: float | None, sq_errors: list[float], seed: int) -> dict[str, Any]:
    """Wilson 95% interval of the accuracy over ``n`` scored rows, and a seeded bootstrap 95%
    interval of the MSE over its per-row squared errors (None where there is nothing)."""
    from forecast.metrics import bootstrap_interval, wilson_interval

    def pair(i: Any) -> dict[str, float]:
        return {"low": i.low, "high": i.high, "level": i.level}

    return {
        "binary_accuracy_ci": pair(wilson_interval(accuracy, n)) if n and accuracy is not None else None,
        "mse_ci": pair(bootstrap_interval(sq_errors, seed=seed)) if sq_errors else None,
    }


def squared_errors_logged(log_engine: Any, name: str, version: str) -> list[float]:
    """Per scored forecast of ``name@version`` in the log, its squared error of bin midpoints
    (what the scorecard's MSE averages)."""
    from sqlalchemy import select

    from service.forecast_log import ForecastRow as R

    query = select(R.predicted_mid, R.realized_mid).where(
        R.adapter == name, R.version == version, R.prediction.is_not(None),
        R.realized_return.is_not(None),
    )  # fmt: skip
    with log_engine.connect() as conn:
        return [(p - y) ** 2 for p, y in conn.execute(query)]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from pydantic import SecretStr
    from sqlalchemy import text

    from forecast.providers.snapshot import SnapshotMarketData
    from forecast.settings import DataSettings
    from service.backfill import replay, sundays
    from service.bootstrap import prepare_settings, running, sdk_client
    from service.manifest import versions_on_disk
    from service.settings import EngineSettings, ServiceSettings

    work = WORK / "speed_accuracy"
    shutil.rmtree(work, ignore_errors=True)
    token = secrets.token_urlsafe(16)
    settings = ServiceSettings(
        _env_file=None,  # type: ignore[call-arg]
        adapter_root=args.adapter_root, db_url=f"sqlite:///{work / 'forecasts.sqlite3'}",
        admin_token=SecretStr(token), max_new_tokens=args.max_new_tokens, max_inflight=1024,
        weeks=args.weeks, news_per_week=args.news, with_financials=False,
        engines=[
            EngineSettings(**({"base": b, "kv_cache_gib": 1, "max_model_len": 4096} | args.engine))
            for b in BASES
        ],
    )
    settings = prepare_settings(settings, DataSettings(), demo_adapters=True)
    targets = args.adapters or [
        f"{name}@{v}" for name in settings.preload for v in versions_on_disk(args.adapter_root, name)
    ]
    weeks = sundays(args.start, args.end)
    rows: list[dict[str, Any]] = []
    async with running(settings, SnapshotMarketData()) as app, sdk_client(app, settings, retry=NO_RETRY) as c:
        for target in targets:
            name, version = target.split("@", 1)
            with contextlib.suppress(ConflictError):  # already loaded
                await c.load_adapter(name, version, promote=False)
        await replay(c, weeks[:1], args.tickers[:2], targets, args.concurrency)  # warm-up
        with app.state.service.forecast_log.engine.begin() as conn:  # this run's own log
            conn.execute(text("DELETE FROM forecasts"))
        for target in targets:
            t0 = time.perf_counter()
            report = await replay(c, weeks, args.tickers, [target], args.concurrency)
            wall = time.perf_counter() - t0
            name, version = target.split("@", 1)
            card = next(v for v in report["scorecards"][target]["versions"] if v["version"] == version)
            manifest = json.loads((args.adapter_root / name / version / "adapter.json").read_text())
            errors = squared_errors_logged(app.state.service.forecast_log.engine, name, version)
            rows.append({
                **card, **intervals(card["scored"], card["binary_accuracy"], errors, args.seed),
                "adapter": target, "trained": "note" not in manifest,
                "base_model": manifest.get("base_model"), "requests": report["requests"],
                "failed": len(report["failed"]), "wall_s": wall,
                "forecasts_per_s": report["requests"] / wall,
            })
    return {
        "benchmark": "speed_accuracy",
        "machine": machine(),
        "config": {k: str(v) if isinstance(v, Path | dt.date) else v for k, v in vars(args).items()},
        "weeks": [w.isoformat() for w in weeks],
        "note": "after a warm-up (deleted from the log) each version replays alone: forecasts_per_s "
                "is that replay's wall time; the other columns are the version's scorecard; "
                "binary_accuracy_ci: Wilson 95%; mse_ci: percentile bootstrap 95% over the "
                "per-forecast squared errors (2,000 resamples, seed in config)",
        "adapters": rows,
        "baselines": baselines(args.tickers, weeks, (args.train_start, args.train_end), args.seed),
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in report["adapters"]:
        if row["binary_accuracy"] is None:
            continue
        marker = "o" if row["trained"] else "x"
        ax.scatter([row["forecasts_per_s"]], [row["binary_accuracy"]], marker=marker, s=70,
                   label=f"{row['adapter']} (MSE {row['mse']:.1f})")
        ax.annotate(row["adapter"], (row["forecasts_per_s"], row["binary_accuracy"]), fontsize=7,
                    textcoords="offset points", xytext=(5, 4))
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo - 0.15 * (hi - lo), hi + 0.15 * (hi - lo))
    for name, b in report["baselines"].items():
        ax.axhline(b["binary_accuracy"], linestyle=":", linewidth=1, color="grey")
        ax.annotate(f"baseline {name} (MSE {b['mse']:.1f})", (ax.get_xlim()[1], b["binary_accuracy"]),
                    fontsize=7, color="grey", ha="right", va="bottom")
    ax.set(xlabel="forecasts/s through the service (CPU, tiny model)", ylabel="binary accuracy",
           title="Speed vs accuracy per adapter version, evaluation weeks")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(report: dict[str, Any]) -> str:
    """One row per adapter version and baseline; accuracy and MSE each with its 95% interval
    (a report written before the intervals gets the Wilson one recomputed, the MSE one "-")."""

    def f(x: Any, spec: str = ".3f") -> str:
        return "-" if x is None else format(x, spec)

    def ci(row: dict[str, Any], key: str, spec: str) -> str:
        i = row.get(f"{key}_ci")
        if i is None and key == "binary_accuracy" and row.get("binary_accuracy") is not None:
            n = row.get("scored", row.get("n", 0))
            i = intervals(n, row["binary_accuracy"], [], 0)["binary_accuracy_ci"]
        return "-" if i is None else f"{i['low']:{spec}}–{i['high']:{spec}}"

    head = (f"{'adapter':<26}{'n':>5}{'fc/s':>8}{'tok/s':>8}{'lat s':>8}{'parsed':>8}{'probed':>8}"
            f"{'acc':>7}{'acc 95% CI':>14}{'mse':>8}{'mse 95% CI':>14}")  # fmt: skip
    lines = [head]
    for r in report["adapters"]:
        lines.append(f"{r['adapter']:<26}{r['forecasts']:>5}{f(r['forecasts_per_s']):>8}{f(r['tokens_per_s'], '.1f'):>8}"
                     f"{f(r['mean_latency_s'], '.2f'):>8}{r['parsed']:>8}{r['probed']:>8}"
                     f"{f(r['binary_accuracy']):>7}{ci(r, 'binary_accuracy', '.3f'):>14}"
                     f"{f(r['mse'], '.2f'):>8}{ci(r, 'mse', '.2f'):>14}")
    for name, b in report["baselines"].items():
        lines.append(f"{'baseline ' + name:<26}{b['n']:>5}{'':>40}{f(b['binary_accuracy']):>7}"
                     f"{ci(b, 'binary_accuracy', '.3f'):>14}{f(b['mse'], '.2f'):>8}{ci(b, 'mse', '.2f'):>14}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2023, 10, 22))
    p.add_argument("--end", type=dt.date.fromisoformat, default=dt.date(2023, 12, 17))
    p.add_argument("--train-start", type=dt.date.fromisoformat, default=dt.date(2023, 1, 15))
    p.add_argument("--train-end", type=dt.date.fromisoformat, default=dt.date(2023, 8, 27))
    p.add_argument("--tickers", nargs="+", default=TICKERS)
    p.add_argument("--adapters", nargs="*", help="name@version; default: every version on disk")
    p.add_argument("--adapter-root", type=Path, default=ROOT / "var" / "adapters")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--weeks", type=int, default=4, help="weeks of history in a prompt")
    p.add_argument("--news", type=int, default=3, help="news items a week (4 x 3: ~1,700 tokens)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--engine", type=json.loads, default={},
                   help='engine settings over the CPU defaults, as JSON (on a GPU: '
                        '\'{"gpu_memory_utilization": 0.4, "structured_output_backend": "guidance"}\')')
    p.add_argument("--seed", type=int, default=0, help="seed of the MSE bootstrap")
    p.add_argument("--out", type=Path, default=RESULTS / "speed_accuracy.json")
    p.add_argument("--plot-only", action="store_true", help="redraw table and PNG from --out")
    args = p.parse_args()
    if args.plot_only:
        report = json.loads(args.out.read_text())
        print(table(report))
        plot(report, args.out.with_suffix(".png"))
        return
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0-1")  # one engine busy at a time: all cores
    report = asyncio.run(measure(args))
    print(table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
