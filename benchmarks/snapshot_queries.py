"""Warm snapshot queries: the data calls of one prompt build (profile, ~6 weeks of bars,
4 weeks of news, basic financials) on a provider whose files are already parsed.

    python benchmarks/snapshot_queries.py [--repeats 50]

Prints a table and writes benchmarks/results/snapshot_queries.json. Goal: warm p50 < 20 ms
(was a unit-test assert; a claim about speed belongs here, measured, not asserted).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, write_result
from forecast.providers.snapshot import SnapshotMarketData

D = dt.date
TICKERS = ("MSFT", "AAPL", "KO", "JPM")


def one_build(snap: SnapshotMarketData, ticker: str) -> None:
    snap.profile(ticker)
    snap.daily_bars(ticker, D(2023, 11, 20), D(2024, 1, 1))
    snap.company_news(ticker, D(2023, 12, 4), D(2023, 12, 31))
    snap.basic_financials(ticker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    snap = SnapshotMarketData()
    rows = []
    for ticker in TICKERS:
        t0 = time.perf_counter()
        one_build(snap, ticker)  # cold: parses the ticker's files once
        cold_ms = (time.perf_counter() - t0) * 1000
        warm = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            one_build(snap, ticker)
            warm.append((time.perf_counter() - t0) * 1000)
        warm.sort()
        rows.append({"ticker": ticker, "cold_ms": round(cold_ms, 2),
                     "warm_p50_ms": round(statistics.median(warm), 3),
                     "warm_p95_ms": round(warm[int(0.95 * (len(warm) - 1))], 3)})
    print(f"{'ticker':<8}{'cold ms':>10}{'warm p50 ms':>14}{'warm p95 ms':>14}")
    for r in rows:
        print(f"{r['ticker']:<8}{r['cold_ms']:>10}{r['warm_p50_ms']:>14}{r['warm_p95_ms']:>14}")
    path = write_result("snapshot_queries", {
        "benchmark": "snapshot_queries", "repeats": args.repeats, "goal_warm_p50_ms": 20,
        "machine": machine(), "results": rows,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
