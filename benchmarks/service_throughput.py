"""Per-adapter serving speed through the whole service on the tiny model (CPU).

    python benchmarks/service_throughput.py [--requests 8] [--concurrency 4] [--max-new-tokens 32]

Builds the real app over real vLLM CPU engines (one per base, eager mode) with the stand-in
adapters, then, for each adapter alone and for a 50/50 A/B mix, sends ``--requests``
forecasts of distinct tickers at ``--concurrency`` through the HTTP API (in-process ASGI) and
reports forecasts per second, time to first token, decode tokens per second and end-to-end
latency as the service measured them. Writes benchmarks/results/service_throughput.json and
prints a table; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from forecast.basemodels import BASES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULT = ROOT / "benchmarks" / "results" / "service_throughput.json"
TICKERS = ["AAPL", "MSFT", "KO", "JPM", "BA", "CAT", "DIS", "HD", "IBM", "MCD", "NKE", "PG",
           "TRV", "UNH", "V", "WMT"]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_case(
    client: httpx.AsyncClient, name: str, adapters: list[str], n: int, concurrency: int
) -> dict[str, Any]:
    limit = asyncio.Semaphore(concurrency)
    bodies: list[dict[str, Any]] = []

    async def one(i: int) -> None:
        body = {"ticker": TICKERS[i % len(TICKERS)], "adapter": adapters[i % len(adapters)]}
        async with limit:
            r = await client.post("/v1/forecast", json=body)
        r.raise_for_status()
        bodies.append(r.json())

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - started
    lat = [b["latency"] for b in bodies]
    decode = [
        (b["generated_tokens"] - 1) / b["latency"]["generation_s"]
        for b in bodies if b["latency"]["generation_s"] and b["generated_tokens"] > 1
    ]
    return {
        "case": name,
        "adapters": adapters,
        "requests": n,
        "wall_s": wall,
        "forecasts_per_s": n / wall,
        "ttft_p50_s": pct([x["ttft_s"] for x in lat], 0.5),
        "ttft_p95_s": pct([x["ttft_s"] for x in lat], 0.95),
        "total_p50_s": pct([x["total_s"] for x in lat], 0.5),
        "total_p95_s": pct([x["total_s"] for x in lat], 0.95),
        "decode_tokens_per_s_median": statistics.median(decode) if decode else None,
        "generated_tokens_mean": statistics.mean(b["generated_tokens"] for b in bodies),
        "parse_failures": sum(b["prediction"] is None for b in bodies),
    }


async def run_batch_case(
    client: httpx.AsyncClient, adapter: str, engine_slots: int, day: dt.date
) -> dict[str, Any]:
    """The Dow 30 batch wall time against one forecast's time × 30 / the engine's batch slots
    (perfect scaling), and against the same 30 tickers sent as single forecasts by a client
    keeping ``engine_slots`` in flight (what a user could do without the batch route). Each
    of the three runs on its own week, so no run reuses another's prompts from vLLM's prefix
    cache."""
    weeks = {"single": day - dt.timedelta(days=14), "batch": day, "fanout": day - dt.timedelta(days=7)}
    t0 = time.perf_counter()
    single = await client.post(
        "/v1/forecast", json={"ticker": "AAPL", "adapter": adapter, "as_of": weeks["single"].isoformat()}
    )
    single_s = time.perf_counter() - t0
    single.raise_for_status()
    t0 = time.perf_counter()
    r = await client.post("/v1/forecast/batch", json={"adapter": adapter, "as_of": weeks["batch"].isoformat()})
    batch_s = time.perf_counter() - t0
    r.raise_for_status()
    tickers = [f["ticker"] for f in r.json()["forecasts"]] + [e["ticker"] for e in r.json()["errors"]]
    n = len(tickers)
    limit = asyncio.Semaphore(engine_slots)

    async def one(ticker: str) -> None:
        async with limit:
            body = {"ticker": ticker, "adapter": adapter, "as_of": weeks["fanout"].isoformat()}
            (await client.post("/v1/forecast", json=body)).raise_for_status()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(t) for t in tickers))
    fanout_s = time.perf_counter() - t0
    ideal = single_s * n / engine_slots
    return {"adapter": adapter, "tickers": n, "errors": len(r.json()["errors"]), "single_s": single_s,
            "batch_s": batch_s, "engine_slots": engine_slots, "ideal_s": ideal, "batch_over_ideal": batch_s / ideal,
            "goal_batch_over_ideal": 1.2, "sequential_s": single_s * n, "speedup_vs_sequential": single_s * n / batch_s,
            "client_fanout_s": fanout_s, "batch_over_client_fanout": batch_s / fanout_s,
            "weeks": {k: v.isoformat() for k, v in weeks.items()}}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from forecast.providers.snapshot import SnapshotMarketData
    from service.bootstrap import prepare_settings, running
    from service.settings import EngineSettings, ServiceSettings

    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
    from forecast.settings import DataSettings

    work = ROOT / "var" / "bench" / "service"
    settings = ServiceSettings(
        _env_file=None,  # type: ignore[call-arg]
        adapter_root=work / "adapters", db_url=f"sqlite:///{work / 'forecasts.sqlite3'}",
        max_new_tokens=args.max_new_tokens, weeks=args.weeks, news_per_week=args.news,
        with_financials=False, max_inflight=1024,
        engines=[
            EngineSettings(base=b, kv_cache_gib=1, max_model_len=4096, dtype=args.dtype)
            for b in BASES
        ],
    )
    settings = prepare_settings(settings, DataSettings(), demo_adapters=True)
    async with running(settings, SnapshotMarketData()) as app:
        aliases = sorted(app.state.service.registry.aliases)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=None) as c:
            await run_case(c, "warm-up", aliases, len(aliases), len(aliases))
            cases = [await run_case(c, a, [a], args.requests, args.concurrency) for a in aliases]
            cases.append(await run_case(c, "A/B 50/50", aliases, args.requests, args.concurrency))
            assert settings.default_as_of is not None
            batch = await run_batch_case(
                c, aliases[0], settings.engines[0].max_num_seqs, settings.default_as_of
            )
    return {
        "benchmark": "service_throughput",
        "config": vars(args),
        "engines": [e.model_dump() for e in settings.engines],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_at_end": os.getloadavg()},
        "cases": cases,
        "dow30_batch": batch,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--weeks", type=int, default=1)
    p.add_argument("--news", type=int, default=1)
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args()
    report = asyncio.run(main_async(args))
    args.out = str(args.out)
    report["config"] = vars(args)
    head = f"{'case':<22}{'n':>4}{'fc/s':>8}{'ttft p50':>10}{'ttft p95':>10}{'e2e p50':>9}{'dec tok/s':>11}"
    print(head)
    for c in report["cases"]:
        print(f"{c['case']:<22}{c['requests']:>4}{c['forecasts_per_s']:>8.3f}{c['ttft_p50_s']:>10.2f}"
              f"{c['ttft_p95_s']:>10.2f}{c['total_p50_s']:>9.2f}{(c['decode_tokens_per_s_median'] or 0):>11.2f}")
    b = report["dow30_batch"]
    print(f"Dow 30 batch: {b['tickers']} tickers in {b['batch_s']:.1f} s; one forecast {b['single_s']:.1f} s; "
          f"batch / (single x {b['tickers']} / {b['engine_slots']}) = {b['batch_over_ideal']:.2f}; "
          f"{b['speedup_vs_sequential']:.1f}x faster than one at a time; "
          f"batch / client fan-out at {b['engine_slots']} = {b['batch_over_client_fanout']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
