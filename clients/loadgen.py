"""Load generator: N concurrent clients against the forecast service, with hot-swaps.

    python -m clients.loadgen --url http://127.0.0.1:8000 --concurrency 16 --duration 300 \\
        --tickers AAPL,MSFT,KO --client-keys 200 --stream \\
        --swap-at 60:fingpt-llama@v2 --reweight-at 120:fingpt-llama=0.3,fingpt-deepseek=0.7 \\
        --out benchmarks/results/loadgen_run.json

Each worker loops: pick a ticker and a client key (``X-Client-Key``, so A/B stays sticky),
ask for a forecast (streamed when ``--stream``: TTFT is then measured here from the first
SSE token; otherwise the service's own TTFT is reported), record one
:class:`~clients.loadstats.Sample`. The run stops taking new requests at ``--duration``
seconds or ``--requests`` requests, whichever comes first, and waits for those in flight.
Swaps (load a version, promote it under an alias) and re-weights run at their times on a
separate admin client. Retries are off by default so every 429/503 counts as an error.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from clients.errors import APIStatusError, Dow30Error, StreamError
from clients.loadstats import Event, Sample, summarize
from clients.models import Forecast
from clients.retry import RetryPolicy
from clients.sdk import AsyncClient

# The index from 2020-08-31 to 2024-02-26: the members the bundled snapshot has news for.
# (clients import nothing from forecast/, so the list is repeated here.)
DOW30_2023 = (
    "AAPL", "AMGN", "AXP", "BA", "CAT", "CRM", "CSCO", "CVX", "DIS", "DOW",
    "GS", "HD", "HON", "IBM", "INTC", "JNJ", "JPM", "KO", "MCD", "MMM",
    "MRK", "MSFT", "NKE", "PG", "TRV", "UNH", "V", "VZ", "WBA", "WMT",
)  # fmt: skip


@dataclass(frozen=True)
class Swap:
    """At ``at_s``: load ``name@version`` and promote it to serve ``alias``."""

    at_s: float
    alias: str
    name: str
    version: str

    @classmethod
    def parse(cls, spec: str) -> Swap:
        """``60:NAME@VERSION`` (alias = NAME) or ``60:ALIAS=NAME@VERSION``."""
        at, _, rest = spec.partition(":")
        alias, eq, ref = rest.rpartition("=")
        name, at_sign, version = ref.partition("@")
        if not (at and name and at_sign and version):
            raise ValueError(f"swap spec must be SECONDS:[ALIAS=]NAME@VERSION, got {spec!r}")
        return cls(float(at), alias if eq else name, name, version)


@dataclass(frozen=True)
class Reweight:
    at_s: float
    weights: dict[str, float]

    @classmethod
    def parse(cls, spec: str) -> Reweight:
        """``120:alias_a=0.3,alias_b=0.7``."""
        at, _, rest = spec.partition(":")
        weights: dict[str, float] = {}
        for pair in filter(None, rest.split(",")):
            alias, eq, weight = pair.partition("=")
            if not eq:
                raise ValueError(f"reweight spec must be SECONDS:ALIAS=W,..., got {spec!r}")
            weights[alias.strip()] = float(weight)
        if not at or not weights:
            raise ValueError(f"reweight spec must be SECONDS:ALIAS=W,..., got {spec!r}")
        return cls(float(at), weights)


@dataclass(frozen=True)
class LoadConfig:
    url: str
    concurrency: int = 16
    duration_s: float | None = 60.0
    requests: int | None = None
    tickers: tuple[str, ...] = ("AAPL", "MSFT", "KO")
    client_keys: int = 100
    stream: bool = False
    as_of: dt.date | None = None
    adapter: str | None = None
    swaps: tuple[Swap, ...] = ()
    reweights: tuple[Reweight, ...] = ()
    seed: int = 0
    timeout_s: float = 300.0
    retries: int = 0
    bucket_s: float = 10.0
    keep_samples: bool = False  # every request's Sample in the JSON too
    admin_token: str | None = field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        """The configuration as written to the JSON: everything but the token."""
        out = asdict(self)
        out.pop("admin_token")
        out["as_of"] = self.as_of.isoformat() if self.as_of else None
        return out


class _Budget:
    """Hands out request slots until the deadline or the request count is reached."""

    def __init__(self, cfg: LoadConfig, clock: Callable[[], float], start: float) -> None:
        self._deadline = None if cfg.duration_s is None else start + cfg.duration_s
        self._left = cfg.requests
        self._clock = clock

    def take(self) -> bool:
        if self._deadline is not None and self._clock() >= self._deadline:
            return False
        if self._left is not None:
            if self._left <= 0:
                return False
            self._left -= 1
        return True


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts every forecast answer on the wire by status (retried ones included)."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.statuses: Counter[int] = Counter()
        self.shed_without_retry_after = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.url.path.startswith("/v1/forecast"):
            self.statuses[response.status_code] += 1
            if response.status_code == 503 and "retry-after" not in response.headers:
                self.shed_without_retry_after += 1
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def run_load(
    cfg: LoadConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Run the load described by ``cfg``; return the summary (also what is written as JSON)."""
    if cfg.duration_s is None and cfg.requests is None:
        raise ValueError("give a duration, a request count, or both")
    limits = httpx.Limits(max_connections=cfg.concurrency + 4)
    retry = RetryPolicy(max_retries=cfg.retries)
    samples: list[Sample] = []
    events: list[Event] = []
    async with (
        AsyncClient(cfg.url, timeout=cfg.timeout_s, retry=retry, limits=limits,
                    transport=transport, seed=cfg.seed) as client,
        AsyncClient(cfg.url, admin_token=cfg.admin_token, timeout=cfg.timeout_s,
                    transport=transport) as admin,
    ):  # fmt: skip
        start = clock()
        budget = _Budget(cfg, clock, start)

        async def worker(i: int) -> None:
            rng = random.Random(cfg.seed * 100_003 + i)
            while budget.take():
                samples.append(await _one_request(client, cfg, rng, clock, start))

        scheduler = asyncio.create_task(_run_events(admin, cfg, clock, start, events))
        await asyncio.gather(*(worker(i) for i in range(cfg.concurrency)))
        elapsed = clock() - start
        if not scheduler.done():  # events scheduled after the load ended never run
            scheduler.cancel()
        await asyncio.gather(scheduler, return_exceptions=True)
    return summarize(samples, events, elapsed, cfg.public(), cfg.bucket_s, cfg.keep_samples)


async def _one_request(
    client: AsyncClient,
    cfg: LoadConfig,
    rng: random.Random,
    clock: Callable[[], float],
    start: float,
) -> Sample:
    ticker = rng.choice(cfg.tickers)
    key = f"client-{rng.randrange(cfg.client_keys)}"
    t0 = clock()
    done = functools.partial(Sample, start_s=t0 - start, ticker=ticker, client_key=key)
    try:
        ttft: float | None
        if cfg.stream:
            stream = await client.stream_forecast(
                ticker, as_of=cfg.as_of, adapter=cfg.adapter, client_key=key
            )
            forecast = await stream.collect()
            ttft, source, tokens = stream.ttft_s, "sse", stream.state.tokens
        else:
            forecast = await client.forecast(
                ticker, as_of=cfg.as_of, adapter=cfg.adapter, client_key=key
            )
            ttft, source, tokens = forecast.latency.ttft_s, "server", None
    except APIStatusError as exc:
        return done(
            latency_s=clock() - t0, ok=False, error_type=exc.error_type, status=exc.status_code
        )
    except StreamError as exc:
        return done(latency_s=clock() - t0, ok=False, error_type=exc.error_type)
    except Dow30Error as exc:
        return done(latency_s=clock() - t0, ok=False, error_type=type(exc).__name__)
    return done(
        latency_s=clock() - t0, ok=True, arm=forecast.arm, adapter=forecast.adapter,
        ttft_s=ttft, ttft_source=source if ttft is not None else None,
        tokens=_tokens(forecast, tokens),
    )  # fmt: skip


def _tokens(forecast: Forecast, streamed: int | None) -> int | None:
    return forecast.generated_tokens if forecast.generated_tokens is not None else streamed


async def _run_events(
    admin: AsyncClient,
    cfg: LoadConfig,
    clock: Callable[[], float],
    start: float,
    events: list[Event],
) -> None:
    plan: list[Swap | Reweight] = sorted([*cfg.swaps, *cfg.reweights], key=lambda e: e.at_s)
    for item in plan:
        await asyncio.sleep(max(0.0, start + item.at_s - clock()))
        t0 = clock()
        kind = "swap" if isinstance(item, Swap) else "reweight"
        target = (
            f"{item.alias}={item.name}@{item.version}"
            if isinstance(item, Swap)
            else ",".join(f"{a}={w:g}" for a, w in item.weights.items())
        )
        try:
            detail = await (
                _swap(admin, item) if isinstance(item, Swap) else _reweight(admin, item)
            )
            ok, error = True, None
        except Dow30Error as exc:
            detail, ok, error = {}, False, str(exc)
        events.append(Event(kind, target, item.at_s, t0 - start, clock() - t0, ok, error, detail))


async def _swap(admin: AsyncClient, swap: Swap) -> dict[str, Any]:
    """Load the version and flip the alias in one call (the service loads first, flips, then
    retires the old version once its in-flight requests finish)."""
    before = (await admin.list_adapters()).aliases.get(swap.alias)
    after = await admin.load_adapter(swap.name, swap.version, promote=True, alias=swap.alias)
    return {"before": before, "after": after.ref}


async def _reweight(admin: AsyncClient, rw: Reweight) -> dict[str, Any]:
    routing = await admin.reweight(rw.weights)
    return {"arms": {arm.name: arm.weight for arm in routing.arms}, "version": routing.version}


def report_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"load: {summary['elapsed_s']:.1f} s")
    cols = ("group", "requests", "ok", "errors", "samples/s",
            "p50 s", "p95 s", "p99 s", "ttft p50 s", "ttft p95 s")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col == "group" else "right")
    groups = [("all", summary["totals"])]
    groups += [(f"arm {a}", s) for a, s in summary["per_arm"].items()]
    groups += [(f"adapter {a}", s) for a, s in summary["per_adapter"].items()]
    for name, s in groups:
        lat, ttft = s["latency_s"], s["ttft_s"]
        table.add_row(
            name, str(s["requests"]), str(s["ok"]), str(s["errors"]),
            _fmt(s["samples_per_s"]), _fmt(lat["p50"]), _fmt(lat["p95"]), _fmt(lat["p99"]),
            _fmt(ttft["p50"]), _fmt(ttft["p95"]),
        )  # fmt: skip
    return table


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@app.command()
def main(
    url: Annotated[str, typer.Option(envvar="DOW30_URL")] = "http://127.0.0.1:8000",
    concurrency: Annotated[int, typer.Option(min=1)] = 16,
    duration: Annotated[float | None, typer.Option(help="Seconds of load.")] = 60.0,
    requests: Annotated[int | None, typer.Option(help="Stop after this many.")] = None,
    tickers: Annotated[str, typer.Option(help="Comma list, or 'dow30'.")] = "AAPL,MSFT,KO",
    client_keys: Annotated[int, typer.Option(min=1, help="Distinct X-Client-Keys.")] = 100,
    stream: Annotated[bool, typer.Option(help="Use SSE; TTFT measured here.")] = False,
    as_of: Annotated[str | None, typer.Option(help="YYYY-MM-DD for every request.")] = None,
    adapter: Annotated[str | None, typer.Option(help="Pin an alias (no A/B).")] = None,
    swap_at: Annotated[list[str] | None, typer.Option(help="SECONDS:[ALIAS=]NAME@VER")] = None,
    reweight_at: Annotated[list[str] | None, typer.Option(help="SECONDS:A=W,B=W")] = None,
    token: Annotated[
        str | None, typer.Option(envvar="DOW30_ADMIN_TOKEN", show_default=False)
    ] = None,
    seed: int = 0,
    timeout: Annotated[float, typer.Option(help="Per-request timeout, seconds.")] = 300.0,
    retries: Annotated[int, typer.Option(help="429/503 retries (0: count them).")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write the JSON summary here.")] = None,
    samples: Annotated[bool, typer.Option(help="Also write every request's sample.")] = False,
) -> None:
    """Run load against the forecast service and report latency, TTFT and samples/s."""
    try:
        cfg = LoadConfig(
            url=url, concurrency=concurrency, duration_s=duration, requests=requests,
            tickers=DOW30_2023 if tickers == "dow30" else tuple(
                t.strip().upper() for t in tickers.split(",") if t.strip()),
            client_keys=client_keys, stream=stream,
            as_of=dt.date.fromisoformat(as_of) if as_of else None, adapter=adapter,
            swaps=tuple(Swap.parse(s) for s in swap_at or ()),
            reweights=tuple(Reweight.parse(s) for s in reweight_at or ()),
            seed=seed, timeout_s=timeout, retries=retries, admin_token=token,
            keep_samples=samples,
        )  # fmt: skip
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if (cfg.swaps or cfg.reweights) and not cfg.admin_token:
        raise typer.BadParameter("swaps and re-weights need DOW30_ADMIN_TOKEN or --token")
    summary = asyncio.run(run_load(cfg))
    console = Console() if sys.stdout.isatty() else Console(width=160)  # logs: full columns
    console.print(report_table(summary))
    for e in summary["events"]:
        mark = "ok" if e["ok"] else f"FAILED: {e['error']}"
        console.print(f"{e['kind']} {e['target']} at {e['started_s']:.1f}s: {mark}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2) + "\n")
        console.print(f"wrote {out}")
    if summary["totals"]["errors"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
