"""Replay past weeks of the bundled snapshot through the service → per-adapter scorecards.

Every (week, ticker, adapter) is POSTed to ``/v1/forecast`` naming the adapter, so each
forecast takes the service's real path (prompt, engine, parse, log, metrics); then the scorer
fills realized returns (the weeks are long closed) and the scorecards are read back from
``/v1/adapters/{name}/scorecard``. This is the speed-vs-accuracy comparison, offline.

    python -m service.backfill --start 2023-10-01 --end 2023-12-31 --tickers AAPL MSFT KO
    python -m service.backfill --url http://127.0.0.1:8000 --admin-token ...   # a running one

In-process (the default) it starts the configured engines itself (``--fake`` for the fake
engine, which answers well-formed random bins: a plumbing check, not a model).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import secrets
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from clients.errors import APIStatusError
from clients.retry import NO_RETRY
from clients.sdk import AsyncClient
from forecast.providers.snapshot import SNAPSHOT_LATEST
from forecast.windows import week_start

DEFAULT_TICKERS = ("AAPL", "MSFT", "KO", "JPM", "CVX", "WMT")


def sundays(start: dt.date, end: dt.date) -> list[dt.date]:
    first = week_start(start)
    if first < start:
        first += dt.timedelta(days=7)
    return [first + dt.timedelta(days=7 * i) for i in range((end - first).days // 7 + 1)]


async def replay(
    client: AsyncClient,
    weeks: Sequence[dt.date],
    tickers: Sequence[str],
    adapters: Sequence[str],
    concurrency: int = 4,
) -> dict[str, Any]:
    """Forecast every (week, ticker, adapter), score, and return the scorecards (``client``
    carries the admin token scoring needs)."""
    limit = asyncio.Semaphore(concurrency)
    failures: list[dict[str, Any]] = []

    async def one(week: dt.date, ticker: str, adapter: str) -> None:
        async with limit:
            try:
                await client.forecast(ticker, as_of=week, adapter=adapter)
            except APIStatusError as exc:
                failures.append({
                    "ticker": ticker, "as_of": week.isoformat(), "adapter": adapter,
                    "status": exc.status_code,
                    "error": {"type": exc.error_type, "message": exc.message, "code": exc.code},
                })

    await asyncio.gather(*(one(w, t, a) for w in weeks for t in tickers for a in adapters))
    scored = await client.score_now()
    cards = {}
    for adapter in adapters:
        card = await client.scorecard(adapter.split("@", 1)[0])
        cards[adapter] = card.model_dump(mode="json")
    return {
        "weeks": [w.isoformat() for w in weeks],
        "tickers": list(tickers),
        "adapters": list(adapters),
        "requests": len(weeks) * len(tickers) * len(adapters),
        "failed": failures,
        "scored_rows": scored,
        "scorecards": cards,
    }


def table(report: dict[str, Any]) -> str:
    head = f"{'adapter':<28}{'n':>5}{'parsed':>8}{'scored':>8}{'acc':>7}{'mse':>8}{'lat s':>9}{'tok/s':>10}"
    lines = [head, "-" * len(head)]
    for card in report["scorecards"].values():
        for c in card.get("versions", []):
            lines.append(
                f"{c['adapter'] + '@' + c['version']:<28}{c['forecasts']:>5}{c['parsed']:>8}"
                f"{c['scored']:>8}{_fmt(c['binary_accuracy']):>7}{_fmt(c['mse']):>8}"
                f"{_fmt(c['mean_latency_s']):>9}{_fmt(c['tokens_per_s']):>10}"
            )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


@asynccontextmanager
async def in_process(fake: bool, db_url: str | None) -> AsyncIterator[tuple[AsyncClient, list[str]]]:
    """The service built here, over its configured engines (or fakes), without a socket: the
    SDK talking to it, and the aliases it serves."""
    from forecast.settings import DataSettings, market_data_from_settings
    from service.bootstrap import prepare_settings, running, sdk_client
    from service.settings import ServiceSettings

    token = secrets.token_urlsafe(16)
    updates: dict[str, Any] = {"admin_token": SecretStr(token), "default_as_of": None}
    if db_url:
        updates["db_url"] = db_url
    data = DataSettings()
    settings = prepare_settings(ServiceSettings(), data, demo_adapters=True).model_copy(update=updates)
    engines: dict[str, Any] | None = None  # None: the configured engines, started by running()
    if fake:
        from service.testing import FakeEngine

        engines = {e.base: FakeEngine(e.base, model_id=_model_id(e)) for e in settings.engines}
    async with (
        running(settings, market_data_from_settings(data), engines) as app,
        sdk_client(app, settings, retry=NO_RETRY) as client,
    ):
        yield client, list(app.state.service.registry.aliases)


def _model_id(spec: Any) -> str:
    from service.engine_args import resolve_model_id

    return resolve_model_id(spec)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    weeks = sundays(args.start, args.end)
    if args.url:
        remote = AsyncClient(args.url, admin_token=args.admin_token, timeout=None, retry=NO_RETRY)
        async with remote as client:
            adapters = args.adapters or list((await client.list_adapters()).aliases)
            return await replay(client, weeks, args.tickers, adapters, args.concurrency)
    async with in_process(args.fake, args.db_url) as (client, aliases):
        adapters = args.adapters or aliases
        return await replay(client, weeks, args.tickers, adapters, args.concurrency)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m service.backfill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2023, 12, 3))
    p.add_argument("--end", type=dt.date.fromisoformat, default=SNAPSHOT_LATEST)
    p.add_argument("--tickers", nargs="+", default=list(DEFAULT_TICKERS))
    p.add_argument("--adapters", nargs="*", help="aliases or name@version; default: all served")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--url", help="a running service; default: build one in this process")
    p.add_argument("--admin-token", default="", help="with --url: the admin token")
    p.add_argument("--fake", action="store_true", help="in-process with the fake engine")
    p.add_argument("--db-url", help="in-process: forecast log URL (default: the service's)")
    p.add_argument("--out", type=Path, help="write the report as JSON here")
    args = p.parse_args(argv)
    report = asyncio.run(run(args))
    print(table(report))
    if report["failed"]:
        print(f"{len(report['failed'])} of {report['requests']} forecasts failed", file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
