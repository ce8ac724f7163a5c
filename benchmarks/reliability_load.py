"""Load with hot-swaps on the real tiny-model service: no request may fail.

    python benchmarks/reliability_load.py [--duration 300] [--concurrency 16] \\
        [--max-new-tokens 48] [--max-inflight 12] [--retries 30]

Starts ``python -m service --demo-adapters`` (two vLLM CPU engines on the tiny model, the
stand-in adapters ``fingpt-llama@v0`` and ``fingpt-deepseek@v0`` routed 50/50) on a fresh
adapter root and forecast log, writes a second version ``fingpt-llama@v1`` once it is up, and
runs the load generator (``clients.loadgen``) at ``--concurrency`` clients for ``--duration``
seconds with, during the run: a hot-swap to ``fingpt-llama@v1`` (at 20% of the run), a
routing re-weight to 30/70 (40%), and a hot-swap back to ``v0`` (60%).

``--max-inflight`` below the concurrency makes the service shed load: it answers 503 with
``Retry-After`` and the clients retry after it (up to ``--retries`` times). Every answer on
the wire is counted by status, so the JSON reports both numbers honestly: backpressure 503s
(retried), and failed requests (what a client finally got that was not a forecast). Then it
checks the forecast log holds one row per forecast answered, sends SIGTERM, and writes
benchmarks/results/reliability_load.json. It asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, tiny_model, write_result  # noqa: E402
from clients.loadgen import (  # noqa: E402
    DOW30_2023,
    CountingTransport,
    LoadConfig,
    Reweight,
    Swap,
    report_table,
    run_load,
)

WORK = ROOT / "var" / "bench" / "reliability_load"
LLAMA, DEEPSEEK = "fingpt-llama", "fingpt-deepseek"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(args: argparse.Namespace, port: int, token: str) -> subprocess.Popen[bytes]:
    engine = {"kv_cache_gib": 1, "max_model_len": 4096, "max_num_seqs": 16}
    env = {
        **os.environ,
        "FORECAST_SERVICE_PORT": str(port),
        "FORECAST_SERVICE_ADMIN_TOKEN": token,
        "FORECAST_SERVICE_ADAPTER_ROOT": str(WORK / "adapters"),
        "FORECAST_SERVICE_DB_URL": f"sqlite:///{WORK / 'forecasts.sqlite3'}",
        "FORECAST_SERVICE_ENGINES": json.dumps(
            [{"base": "llama", **engine}, {"base": "deepseek", **engine}]
        ),
        "FORECAST_SERVICE_MAX_NEW_TOKENS": str(args.max_new_tokens),
        "FORECAST_SERVICE_MAX_INFLIGHT": str(args.max_inflight),
        "FORECAST_SERVICE_WEEKS": "1",  # a short prompt window keeps 2 cores able to serve
        "FORECAST_SERVICE_NEWS_PER_WEEK": "2",
        "FORECAST_SERVICE_WITH_FINANCIALS": "false",
        "FORECAST_SERVICE_READY_PROBE_S": "3600",
        "FORECAST_SERVICE_READY_TIMEOUT_S": "600",
        "TOKENIZERS_PARALLELISM": "false",
    }
    log = (WORK / "service.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "service", "--demo-adapters"], cwd=ROOT, env=env,
        stdout=log, stderr=subprocess.STDOUT,
    )


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited ({proc.returncode}); see {WORK / 'service.log'}")
        try:
            if httpx.get(f"{url}/readyz", timeout=600).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise SystemExit(f"the service was not ready in {timeout_s:.0f} s")


def write_second_version() -> None:
    """``fingpt-llama@v1``: another random stand-in, written after start so v0 is preloaded."""
    from service.demo_adapters import write_peft_adapter
    from service.engine_args import resolve_model_id
    from service.settings import EngineSettings

    model = tiny_model()
    base_model = resolve_model_id(EngineSettings(base="llama", model=str(model)))  # as the service
    write_peft_adapter(model, WORK / "adapters", LLAMA, "v1", "llama", base_model=base_model, seed=7)


def metric_lines(text: str, prefixes: tuple[str, ...]) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefixes)]


def stop_service(proc: subprocess.Popen[bytes]) -> int | None:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=60)
        return None


async def load(args: argparse.Namespace, url: str, token: str) -> tuple[dict[str, Any], CountingTransport]:
    d = args.duration
    cfg = LoadConfig(
        url=url, concurrency=args.concurrency, duration_s=d, tickers=DOW30_2023,
        client_keys=200, swaps=(Swap(0.2 * d, LLAMA, LLAMA, "v1"), Swap(0.6 * d, LLAMA, LLAMA, "v0")),
        reweights=(Reweight(0.4 * d, {LLAMA: 0.3, DEEPSEEK: 0.7}),),
        seed=0, timeout_s=900, retries=args.retries, admin_token=token,
    )
    transport = CountingTransport()
    summary = await run_load(cfg, transport=transport)
    return summary, transport


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--max-inflight", type=int, default=12)
    parser.add_argument("--retries", type=int, default=30)
    parser.add_argument("--out", default="reliability_load")
    args = parser.parse_args()

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    port, token = free_port(), secrets.token_urlsafe(24)
    url = f"http://127.0.0.1:{port}"
    proc = start_service(args, port, token)
    try:
        ready_s = wait_ready(url, proc, timeout_s=1200)
        write_second_version()
        summary, wire = asyncio.run(load(args, url, token))
        metrics = httpx.get(f"{url}/metrics", timeout=60).text
    finally:
        exit_code = stop_service(proc)
    db = sqlite3.connect(WORK / "forecasts.sqlite3")
    rows = int(db.execute("SELECT count(*) FROM forecasts").fetchone()[0])
    db.close()

    totals = summary["totals"]
    events = summary["events"]
    result = {
        "what": "16 clients on the real tiny-model service with 2 hot-swaps and 1 re-weight",
        "machine": machine(),
        "service": {
            "command": "python -m service --demo-adapters", "engines": 2, "model": "SmolLM2-135M-Instruct (CPU, eager)",
            "max_new_tokens": args.max_new_tokens, "max_inflight": args.max_inflight,
            "prompt_window": "1 week, 2 news items, no financials", "ready_after_s": round(ready_s, 1),
            "exit_code_after_sigterm": exit_code,
        },
        "figures": {
            "duration_s": summary["elapsed_s"],
            "requests": totals["requests"],
            "ok": totals["ok"],
            "failed": totals["errors"],
            "failed_by_type": totals["errors_by_type"],
            "answers_on_the_wire_by_status": {str(k): v for k, v in sorted(wire.statuses.items())},
            "backpressure_503_retried": wire.statuses.get(503, 0),
            "backpressure_503_without_retry_after": wire.shed_without_retry_after,
            "swaps": sum(e["kind"] == "swap" for e in events),
            "swaps_ok": sum(e["kind"] == "swap" and e["ok"] for e in events),
            "reweights": sum(e["kind"] == "reweight" for e in events),
            "reweights_ok": sum(e["kind"] == "reweight" and e["ok"] for e in events),
            "forecasts_logged": rows,
            "forecasts_lost": max(0, totals["ok"] - rows),
            "sticky_keys_with_multiple_arms": summary["stickiness"]["keys_with_multiple_arms"],
        },
        "metrics": metric_lines(metrics, (
            "forecast_requests_total", "forecast_adapter_swaps_total", "forecast_engine_restarts_total",
            "forecast_routing_weight",
        )),
        "load": summary,
    }
    path = write_result(args.out, result)
    from rich.console import Console

    console = Console(width=160)
    console.print(report_table(summary))
    console.print(json.dumps(result["figures"], indent=2))
    console.print(f"wrote {path}")
    if totals["errors"] or result["figures"]["forecasts_lost"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
