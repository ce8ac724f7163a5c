"""``dow30``: the forecast service from a shell.

    dow30 forecast AAPL                   # as a person reads it; --json for the raw result, --stream for tokens
    dow30 forecast AAPL --weeks 2 --no-financials --news-per-week 3   # prompt options
    dow30 batch                           # the whole Dow 30, with a progress bar
    dow30 adapters list|load|promote|unload
    dow30 routing show|set fingpt-a=0.5 fingpt-b=0.5
    dow30 scorecard fingpt-a [--vs fingpt-b]   # 95% intervals; z-test between versions/arms

The base URL and admin token come from ``DOW30_URL`` and ``DOW30_ADMIN_TOKEN`` (or
``--url``/``--token``). The token is sent only on admin routes and never printed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clients.errors import Dow30Error
from clients.models import (
    AdapterList,
    BatchItemError,
    BatchResult,
    Forecast,
    PromptOptions,
    Routing,
)
from clients.sdk import Client
from clients.views import forecast_view, scorecard_view

T = TypeVar("T")

# No locals in tracebacks: they would show the admin token.
app = typer.Typer(
    help="Dow30 weekly forecaster client.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
adapters_app = typer.Typer(help="List, load, promote and unload adapters (admin).")
routing_app = typer.Typer(help="Show or set A/B routing weights (admin).")
app.add_typer(adapters_app, name="adapters")
app.add_typer(routing_app, name="routing")

out = Console()
err = Console(stderr=True)


@dataclass
class Options:
    url: str
    token: str | None
    timeout: float
    client_key: str | None

    def client(self) -> Client:
        return Client(
            self.url, admin_token=self.token, client_key=self.client_key, timeout=self.timeout
        )


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option(envvar="DOW30_URL", help="Service base URL.")
    ] = "http://127.0.0.1:8000",
    token: Annotated[
        str | None,
        typer.Option(envvar="DOW30_ADMIN_TOKEN", help="Admin bearer token.", show_default=False),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Per-request timeout, seconds.")] = 300.0,
    client_key: Annotated[
        str | None, typer.Option(envvar="DOW30_CLIENT_KEY", help="Sticky A/B key.")
    ] = None,
) -> None:
    ctx.obj = Options(url=url, token=token, timeout=timeout, client_key=client_key)


@contextmanager
def _client(ctx: typer.Context) -> Iterator[Client]:
    """A client whose errors become one red line and exit code 1."""
    opts: Options = ctx.obj
    try:
        with opts.client() as c:
            yield c
    except Dow30Error as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from exc


def _print_json(value: BaseModel | list[Any] | dict[str, Any]) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    out.print_json(json.dumps(value, default=str))


def _date(value: str | None) -> dt.date | None:
    return None if value is None else dt.date.fromisoformat(value)


AsOf = Annotated[str | None, typer.Option("--as-of", help="Forecast date, YYYY-MM-DD.")]
Adapter = Annotated[str | None, typer.Option(help="Adapter alias (bypasses A/B routing).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the raw JSON response instead.")]
Weeks = Annotated[int | None, typer.Option(help="Past weeks in the prompt, 1-4. Default: the service's.")]
NewsPerWeek = Annotated[
    int | None, typer.Option(help="Headlines per week, 0-5. Default: the service's.")
]
Financials = Annotated[
    bool | None,
    typer.Option("--financials/--no-financials", help="Basic financials in the prompt. Default: the service's."),
]


def _options(weeks: int | None, news_per_week: int | None, financials: bool | None) -> PromptOptions | None:
    """Range checks are the service's (422, shown like any other error)."""
    if weeks is None and news_per_week is None and financials is None:
        return None
    return PromptOptions(weeks=weeks, news_per_week=news_per_week, with_financials=financials)


# -- forecasts -------------------------------------------------------------------------------
@app.command()
def forecast(
    ctx: typer.Context,
    ticker: str,
    as_of: AsOf = None,
    adapter: Adapter = None,
    as_json: AsJson = False,
    stream: Annotated[bool, typer.Option(help="Print tokens as they are generated.")] = False,
    weeks: Weeks = None,
    news_per_week: NewsPerWeek = None,
    financials: Financials = None,
) -> None:
    """Next week's forecast for one ticker."""
    options = _options(weeks, news_per_week, financials)
    with _client(ctx) as c:
        if stream:
            s = c.stream_forecast(ticker.upper(), as_of=_date(as_of), adapter=adapter, options=options)
            for piece in s.tokens():
                if not as_json:
                    out.out(piece, end="", highlight=False)
            if not as_json:
                out.out("")
            result = s.result
        else:
            result = c.forecast(ticker.upper(), as_of=_date(as_of), adapter=adapter, options=options)
    if as_json:
        _print_json(result)
    else:
        out.print(forecast_view(result))


@app.command()
def batch(
    ctx: typer.Context,
    tickers: Annotated[list[str] | None, typer.Argument(help="Default: the Dow 30.")] = None,
    as_of: AsOf = None,
    adapter: Adapter = None,
    as_json: AsJson = False,
    weeks: Weeks = None,
    news_per_week: NewsPerWeek = None,
    financials: Financials = None,
) -> None:
    """Forecasts for many tickers (default: the whole Dow 30 on that date), streamed as each
    finishes behind a progress bar."""
    wanted = [t.upper() for t in tickers] if tickers else None
    forecasts: list[Forecast] = []
    errors: list[BatchItemError] = []
    with _client(ctx) as c, _progress(len(wanted) if wanted else 30) as advance:
        options = _options(weeks, news_per_week, financials)
        for item in c.stream_batch(wanted, as_of=_date(as_of), adapter=adapter, options=options):
            if isinstance(item, Forecast):
                forecasts.append(item)
            else:
                errors.append(item)
            advance(1)
    if as_json:
        _print_json(BatchResult(forecasts=forecasts, errors=errors))
        return
    table = Table(title=f"{len(forecasts)} forecasts, {len(errors)} errors")
    for col in ("ticker", "prediction", "adapter", "arm", "stale", "latency s"):
        table.add_column(col)
    for f in sorted(forecasts, key=lambda f: f.ticker):
        table.add_row(
            f.ticker,
            f.prediction.bin if f.prediction else "unparsed",
            f.adapter or "",
            f.arm or "",
            "yes" if f.freshness.stale else "",
            f"{f.latency.total_s:.2f}" if f.latency.total_s is not None else "",
        )
    for e in errors:
        table.add_row(e.ticker, f"[red]{e.type}[/red]", e.message, "", "", "")
    out.print(table)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    with Progress(
        TextColumn("forecasts"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("batch", total=total)
        yield lambda n: progress.update(task, advance=n)


# -- adapters --------------------------------------------------------------------------------
@adapters_app.command("list")
def adapters_list(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Loaded adapter versions and the aliases they serve."""
    with _client(ctx) as c:
        listing = c.list_adapters()
    if as_json:
        _print_json(listing)
    else:
        out.print(adapters_table(listing))


def adapters_table(listing: AdapterList) -> Table:
    table = Table(title="adapters")
    for col in ("name", "version", "base model", "lora id", "serves"):
        table.add_column(col)
    for a in listing.adapters:
        serves = [alias for alias, target in listing.aliases.items() if target == a.ref]
        table.add_row(
            a.name, a.version, a.base_model or "", str(a.lora_id or ""), ", ".join(serves)
        )
    return table


@adapters_app.command("load")
def adapters_load(
    ctx: typer.Context,
    name: str,
    version: Annotated[str | None, typer.Option(help="Default: the newest on disk.")] = None,
    alias: Annotated[str | None, typer.Option(help="Alias to serve; default: NAME.")] = None,
    promote: Annotated[bool, typer.Option(help="Serve it at once (hot-swap).")] = True,
) -> None:
    """Load an adapter version from the service's adapter root (and serve it)."""
    with _client(ctx) as c:
        loaded = c.load_adapter(name, version, promote=promote, alias=alias)
    serves = f", serving {', '.join(loaded.aliases)}" if loaded.aliases else ""
    out.print(f"loaded {loaded.ref} (LoRA id {loaded.lora_id}){serves}")


@adapters_app.command("promote")
def adapters_promote(ctx: typer.Context, alias: str, ref: str) -> None:
    """Point ALIAS at the loaded version REF (name@version) in one step."""
    with _client(ctx) as c:
        promoted = c.promote_adapter(alias, ref)
    out.print(f"{alias} -> {promoted.ref}")


@adapters_app.command("unload")
def adapters_unload(ctx: typer.Context, name: str, version: str) -> None:
    """Unload a version no alias serves (after its in-flight requests)."""
    with _client(ctx) as c:
        gone = c.unload_adapter(name, version)
    out.print(f"unloaded {gone.ref}")


# -- routing and scorecards ------------------------------------------------------------------
@routing_app.command("show")
def routing_show(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Current A/B arms, weights and shadow."""
    with _client(ctx) as c:
        routing = c.routing()
    if as_json:
        _print_json(routing)
    else:
        out.print(routing_table(routing))


@routing_app.command("set")
def routing_set(
    ctx: typer.Context,
    weights: Annotated[list[str], typer.Argument(help="alias=weight pairs, e.g. a=0.7 b=0.3")],
    shadow: Annotated[str | None, typer.Option(help="Alias that gets a shadow copy.")] = None,
    keep_others: Annotated[
        bool, typer.Option(help="Keep arms not named (else they are dropped).")
    ] = False,
) -> None:
    """Set A/B weights by arm name or alias; arms keep their names."""
    parsed: dict[str, float] = {}
    for pair in weights:
        alias, sep, weight = pair.partition("=")
        try:
            parsed[alias] = float(weight)
        except ValueError:
            sep = ""
        if not sep or not alias:
            raise typer.BadParameter(f"expected alias=weight, got {pair!r}")
    with _client(ctx) as c:
        routing = c.reweight(parsed, shadow=shadow, keep_others=keep_others)
    out.print(routing_table(routing))


def routing_table(routing: Routing) -> Table:
    table = Table(title="routing" + (f" (shadow: {routing.shadow})" if routing.shadow else ""))
    for col in ("arm", "alias", "weight", "share"):
        table.add_column(col)
    for arm in routing.arms:
        share = "" if arm.share is None else f"{arm.share:.1%}"
        table.add_row(arm.name, arm.adapter, f"{arm.weight:g}", share)
    return table


@app.command()
def scorecard(
    ctx: typer.Context,
    name: str,
    vs: Annotated[
        str | None, typer.Option(help="Another adapter (the other arm's): test accuracy against it.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Realized accuracy and MSE of an adapter's forecasts, with 95% intervals, and a
    two-proportion z-test of accuracy between its versions."""
    with _client(ctx) as c:
        card = c.scorecard(name, vs=vs)
    if as_json:
        _print_json(card)
    else:
        out.print(scorecard_view(card, out.width))


if __name__ == "__main__":
    app()
