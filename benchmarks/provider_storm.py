"""The rest of the service during a market-data provider storm (issue 18, item 1).

    python benchmarks/provider_storm.py [--storm 64] [--rounds 150] [--backoff-s 1.0] \\
        [--deadline-s 5]

The real app (``create_app``, the shipped provider pool of 8 threads; the data deadline set
by ``--deadline-s`` so storm forecasts end and are re-sent within the run) over FakeEngines,
served by uvicorn on loopback, with the shipped SQLite cache in front of a live source whose
Finnhub side fails on demand (``service.testing.StormyLive``). KO is forecast once so it is
cached; then, for each mode:

- ``none``: no storm;
- ``hang``: Finnhub stops answering;
- ``500``: Finnhub answers HTTP 500, and the real ``FinnhubProvider`` retries with exponential
  backoff (``--backoff-s``, doubling: 1 + 2 + 4 s per call by default),

``--storm`` clients each keep one forecast of an uncached ticker in flight (re-sent as soon
as it is answered), and once the provider pool is saturated a prober sends ``--rounds``
rounds of ``GET /readyz``, ``GET /metrics``, ``GET /v1/adapters`` (admin) and a cached
``POST /v1/forecast`` (KO), one at a time, and records each latency. Writes p50/p99/max per
route and mode, and how the storm's own forecasts ended (time to the 503 as the client saw it
and as the server did: request received to response start), to
benchmarks/results/provider_storm.json and prints a table. It asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, write_result  # noqa: E402
from forecast.providers.cache import CachedMarketData  # noqa: E402
from forecast.providers.snapshot import SNAPSHOT_LATEST, SnapshotMarketData  # noqa: E402
from forecast.universe import members  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import ServiceSettings  # noqa: E402
from service.testing import FakeEngine, StormyLive, write_stub_adapter  # noqa: E402
from tests.support.http import serve_http  # noqa: E402

TOKEN = "provider-storm-bench-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
MODES = ("none", "hang", "500")
ROUTES = ("readyz", "metrics", "admin", "cached_forecast")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def settings_for(work: Path, deadline_s: float) -> ServiceSettings:
    root = work / "adapters"
    write_stub_adapter(root, "fingpt-llama", "v1", "llama")
    write_stub_adapter(root, "fingpt-deepseek", "v1", "deepseek")
    return ServiceSettings(
        _env_file=None,  # type: ignore[call-arg]
        admin_token=TOKEN, adapter_root=root, db_url=f"sqlite:///{work / 'forecasts.sqlite3'}",
        preload=["fingpt-llama@v1", "fingpt-deepseek@v1"], default_as_of=SNAPSHOT_LATEST,
        max_new_tokens=64, weeks=2, news_per_week=2, provider_deadline_s=deadline_s,
    )


class ServerTimes:
    """ASGI wrapper: the server-side time of each refused forecast (request received to
    response start), apart from the client's own scheduling on this shared 2-core host."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.refused: list[float] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/forecast":
            return await self.app(scope, receive, send)
        started = time.perf_counter()

        async def timed_send(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                self.refused.append(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed_send)


async def probe(client: httpx.AsyncClient, route: str) -> tuple[float, int]:
    started = time.perf_counter()
    if route == "readyz":
        r = await client.get("/readyz")
    elif route == "metrics":
        r = await client.get("/metrics")
    elif route == "admin":
        r = await client.get("/v1/adapters", headers=ADMIN)
    else:
        r = await client.post("/v1/forecast", json={"ticker": "KO"})
    return time.perf_counter() - started, r.status_code


async def storm_client(
    client: httpx.AsyncClient, tickers: Iterator[str], outcomes: Counter[str], times: list[float]
) -> None:
    while True:
        started = time.perf_counter()
        r = await client.post("/v1/forecast", json={"ticker": next(tickers)})
        times.append(time.perf_counter() - started)
        code = r.json().get("error", {}).get("code") if r.status_code != 200 else "ok"
        outcomes[f"{r.status_code} {code}"] += 1


async def run_mode(mode: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    settings = settings_for(work, args.deadline_s)
    live = StormyLive(SnapshotMarketData(), backoff_s=args.backoff_s)
    cache = CachedMarketData(live, work / "cache.sqlite3", dt.timedelta(hours=1))
    engines = {"llama": FakeEngine("llama"), "deepseek": FakeEngine("deepseek")}
    app = create_app(settings, engines, cache, now=lambda: dt.datetime.now(dt.UTC))
    samples: dict[str, list[float]] = {route: [] for route in ROUTES}
    statuses: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    storm_times: list[float] = []
    limits = httpx.Limits(max_connections=args.storm + 8, max_keepalive_connections=args.storm + 8)
    timed = ServerTimes(app)
    with serve_http(timed) as url:
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            assert (await client.post("/v1/forecast", json={"ticker": "KO"})).status_code == 200
            storm: list[asyncio.Task[None]] = []
            if mode != "none":
                live.mode = mode
                tickers = itertools.cycle(t for t in members(SNAPSHOT_LATEST) if t != "KO")
                storm = [
                    asyncio.create_task(storm_client(client, tickers, outcomes, storm_times))
                    for _ in range(args.storm)
                ]
                while live.blocked < settings.provider_threads:  # the provider pool is full
                    await asyncio.sleep(0.01)
            for _ in range(5):  # warm-up, not recorded
                for route in ROUTES:
                    await probe(client, route)
            storm_started = time.perf_counter()
            for _ in range(args.rounds):
                for route in ROUTES:
                    seconds, status = await probe(client, route)
                    samples[route].append(seconds)
                    statuses[f"{route} {status}"] += 1
                await asyncio.sleep(args.gap_s)
            probed_s = time.perf_counter() - storm_started
            in_flight = sum(not t.done() for t in storm)
            for task in storm:
                task.cancel()
            await asyncio.gather(*storm, return_exceptions=True)
    live.release()
    cache.close()
    return {
        "routes": {
            route: {
                "n": len(values), "p50_ms": round(1000 * pct(values, 0.5), 2),
                "p99_ms": round(1000 * pct(values, 0.99), 2),
                "max_ms": round(1000 * max(values), 2),
            }
            for route, values in samples.items()
        },
        "statuses": dict(statuses),
        "probed_s": round(probed_s, 2),
        "storm": {
            "clients": len(storm), "in_flight_at_end": in_flight,
            "answered": dict(outcomes),
            "answer_p50_s": round(pct(storm_times, 0.5), 2) if storm_times else None,
            "answer_max_s": round(max(storm_times), 2) if storm_times else None,
            "server_answer_p50_s": round(pct(timed.refused, 0.5), 2) if timed.refused else None,
            "server_answer_max_s": round(max(timed.refused), 2) if timed.refused else None,
            "provider_calls_while_failing": live.calls,
        },
    }


def table(modes: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'route':<16}" + "".join(f"{m + ' p50/p99 ms':>24}" for m in modes)]
    for route in ROUTES:
        cells = [
            f"{modes[m]['routes'][route]['p50_ms']:>10.1f} / {modes[m]['routes'][route]['p99_ms']:<9.1f}"
            for m in modes
        ]
        lines.append(f"{route:<16}" + "".join(f"{c:>24}" for c in cells))
    for m, result in modes.items():
        if result["storm"]["clients"]:
            lines.append(f"storm {m}: {result['storm']['answered']} "
                         f"(in flight at end: {result['storm']['in_flight_at_end']})")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--storm", type=int, default=64, help="concurrent uncached forecasts")
    parser.add_argument("--rounds", type=int, default=150, help="probe rounds per mode")
    parser.add_argument("--gap-s", type=float, default=0.02, help="pause between probe rounds")
    parser.add_argument("--backoff-s", type=float, default=1.0, help="first Finnhub retry wait")
    parser.add_argument("--deadline-s", type=float, default=5.0, help="provider_deadline_s")
    args = parser.parse_args()
    defaults = ServiceSettings(_env_file=None)  # type: ignore[call-arg]
    modes: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        with tempfile.TemporaryDirectory() as tmp:
            modes[mode] = await run_mode(mode, args, Path(tmp))
    payload = {
        "benchmark": "provider_storm",
        "machine": machine(),
        "config": {
            **vars(args), "provider_threads": defaults.provider_threads,
            "provider_deadline_s": args.deadline_s,
            "provider_deadline_s_default": defaults.provider_deadline_s,
            "anyio_worker_threads": 40, "engines": "FakeEngine (no model)",
            "transport": "HTTP over loopback (uvicorn in a thread of the same process)",
        },
        "modes": modes,
    }
    path = write_result("provider_storm", payload)
    print(table(modes))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
