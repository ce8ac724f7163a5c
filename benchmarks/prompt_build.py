"""Prompt build time: cold (from the snapshot files) and warm (memory; on-disk cache).

    python benchmarks/prompt_build.py

- ``snapshot_cold``: a fresh snapshot provider, first build per ticker (reads CSV/JSONL);
- ``snapshot_warm``: the same provider again (its per-ticker indexes in memory);
- ``cache_warm``: the live path's SQLite cache already filled, read by a fresh cache object
  (what a restarted service pays when its cache is warm); the live source is the snapshot,
  so no network is involved.

Writes benchmarks/results/prompt_build.json. Goal: warm p50 < 20 ms.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, write_result
from forecast.providers.base import MarketData
from forecast.providers.cache import CachedMarketData
from forecast.providers.snapshot import SnapshotMarketData
from forecast.universe import members
from forecast.windows import build_prompt

DAY = dt.date(2023, 12, 10)


def timings(market: MarketData, tickers: list[str], repeat: int = 1) -> list[float]:
    out = []
    for _ in range(repeat):
        for t in tickers:
            t0 = time.perf_counter()
            build_prompt(market, t, DAY)
            out.append((time.perf_counter() - t0) * 1000)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100)
    return {"n": len(ms), "p50_ms": statistics.median(ms), "p95_ms": q[94], "max_ms": max(ms)}


def main() -> None:
    tickers = list(members(DAY))
    results = {"snapshot_cold": summary(timings(SnapshotMarketData(), tickers))}
    warm = SnapshotMarketData()
    timings(warm, tickers)
    results["snapshot_warm"] = summary(timings(warm, tickers, repeat=5))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.sqlite"
        with CachedMarketData(SnapshotMarketData(), path, dt.timedelta(hours=1)) as filling:
            results["cache_fill"] = summary(timings(filling, tickers))
        with CachedMarketData(SnapshotMarketData(), path, dt.timedelta(hours=1)) as cached:
            results["cache_warm"] = summary(timings(cached, tickers, repeat=5))
            results["cache_warm"]["hits"] = cached.hits
            results["cache_warm"]["misses"] = cached.misses
    payload = {"benchmark": "prompt_build", "command": "python benchmarks/prompt_build.py", "machine": machine(),
               "tickers": len(tickers), "day": DAY.isoformat(), "results": results, "goal": {"warm_p50_ms": 20}}
    print(f"{'path':<16}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}")
    for k, v in results.items():
        print(f"{k:<16}{v['n']:>5}{v['p50_ms']:>10.2f}{v['p95_ms']:>10.2f}")
    print(f"wrote {write_result('prompt_build', payload)}")


if __name__ == "__main__":
    main()
