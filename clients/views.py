"""How the CLI shows a forecast and a scorecard to a person: rich renderables, no I/O.

A forecast reads top to bottom like the answer it is (who and when, the prediction and where
it came from, the three FinGPT sections, then who answered and how fast); a scorecard is one
column per version, so that it reads in an 80-column terminal without cutting labels.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from clients.models import (
    AccuracyComparison,
    ConfidenceInterval,
    Forecast,
    Prediction,
    PromptOptions,
    Scorecard,
    ScorecardRow,
)

_ITEM = re.compile(r"^\s*\d+[.)]\s*", re.MULTILINE)  # "1. " / "2) " at a line start
_SOURCES = {
    "line": "read from the answer's Prediction line",
    "prose": "read from the answer's analysis",
    "probe": "probed: the answer was cut off before its Prediction line",
}
_PADDING = 2  # a table cell's padding, one space either side


# -- a forecast ------------------------------------------------------------------------------
def forecast_view(f: Forecast) -> Group:
    parts: list[RenderableType] = [_heading(f), Text(""), _prediction(f.prediction, f.parse_error)]
    sections = (
        ("Positive developments", f.positive_developments),
        ("Potential concerns", f.concerns),
    )
    for title, body in sections:
        if body:
            parts += [Text(""), Text(title, style="bold"), _indent(_numbered(items(body)))]
    if f.analysis:
        parts += [Text(""), Text("Analysis", style="bold"), _indent(Text(f.analysis))]
    if f.prediction is None and f.raw_text:  # nothing parsed: show what the model said
        parts += [Text(""), Text("Answer (unparsed)", style="bold"), _indent(Text(f.raw_text))]
    parts += [Text(""), _facts(f)]
    return Group(*parts)


def items(section: str) -> list[str]:
    """The numbered items of a section ("1. a\\n2. b" → ["a", "b"]); unnumbered text is one."""
    return [p.strip() for p in _ITEM.split(section) if p.strip()]


def _heading(f: Forecast) -> Text:
    head = Text(f.ticker, style="bold")
    if f.company:
        head.append(f"  {f.company}")
    if f.week_start:
        head.append(f"\nweek {f.week_start} → {f.week_end}")
        if f.as_of:
            head.append(f" (data to {f.as_of})", style="dim")
    return head


def _prediction(p: Prediction | None, error: str | None) -> Text:
    line = Text("Prediction: ", style="bold")
    if p is None:
        line.append("none", style="red")
        return line.append(f" ({error})" if error else "", style="dim")
    phrase = p.text or f"{p.direction.capitalize()} by {_range(p.percent_low, p.percent_high)}"
    line.append(phrase, style="green" if p.direction == "up" else "red")
    note = f" ({p.bin}, {_SOURCES.get(p.source, p.source)})"
    return line.append(note, style="yellow" if p.source == "probe" else "dim")


def _numbered(entries: Sequence[str]) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(justify="right")
    grid.add_column(overflow="fold")
    for i, entry in enumerate(entries, 1):
        grid.add_row(f"{i}.", Text(entry))
    return grid


def _facts(f: Forecast) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    served = " · ".join(x for x in (f.adapter, f.arm and f"arm {f.arm}", f.base_model) if x)
    rows = (
        ("adapter", served),
        ("latency", _latency(f)),
        ("data", _freshness(f)),
        ("prompt", _prompt_options(f.options)),
    )
    for name, value in rows:
        if value:
            grid.add_row(name, Text(value))
    return grid


def _latency(f: Forecast) -> str:
    timings = (("total", f.latency.total_s), ("TTFT", f.latency.ttft_s), ("queue", f.latency.queue_s))
    parts = [f"{name} {value:.3f} s" for name, value in timings if value is not None]
    if f.generated_tokens is not None:
        parts.append(f"{f.generated_tokens} tokens")
    if f.finish_reason not in (None, "stop"):
        parts.append(f"ended by {f.finish_reason}")  # a cut answer says so
    return ", ".join(parts)


def _freshness(f: Forecast) -> str:
    sources = ", ".join(f"{k}: {v}" for k, v in f.freshness.sources.items())
    if f.freshness.stale:
        stale = ", ".join(f.freshness.stale_sources) or "some sources"
        return f"STALE: {stale}" + (f" ({sources})" if sources else "")
    return "fresh" + (f" ({sources})" if sources else "")


def _prompt_options(o: PromptOptions | None) -> str | None:
    if o is None:
        return None
    weeks = f"{o.weeks} week{'' if o.weeks == 1 else 's'}"
    return f"{weeks}, {o.news_per_week} news a week, {'with' if o.with_financials else 'no'} financials"


def _range(low: float | None, high: float | None) -> str:
    if low is None:
        return "?"
    return f">{low:g}%" if high is None else f"{low:g}–{high:g}%"


def _indent(renderable: RenderableType) -> Padding:
    return Padding(renderable, (0, 0, 0, 2))


# -- a scorecard -----------------------------------------------------------------------------
Metric = tuple[str, Callable[[ScorecardRow], str | None]]
METRICS: tuple[Metric, ...] = (
    ("forecasts", lambda r: str(r.forecasts)),
    ("parsed", lambda r: str(r.parsed)),
    ("probed", lambda r: str(r.probed)),
    ("parse failures", lambda r: _num(r.parse_failure_rate, "{:.1%}")),
    ("scored", lambda r: str(r.scored)),
    ("binary accuracy", lambda r: _num(r.binary_accuracy, "{:.3f}")),
    ("  95% CI", lambda r: _interval(r.binary_accuracy_ci, "{:.3f}")),
    ("MSE (%²)", lambda r: _num(r.mse, "{:.2f}")),
    ("  95% CI", lambda r: _interval(r.mse_ci, "{:.2f}")),
    ("latency s", lambda r: _num(r.mean_latency_s, "{:.2f}")),
    ("TTFT s", lambda r: _num(r.mean_ttft_s, "{:.3f}")),
    ("tokens/s", lambda r: _num(r.tokens_per_s, "{:.1f}")),
)


def scorecard_view(card: Scorecard, width: int = 80) -> Group:
    """Metrics down, versions across ("all": every version together), in as many tables as
    it takes to fit ``width`` without cutting a name; then the accuracy tests between versions."""
    rows = [*card.versions, *([card.overall] if card.overall else [])]
    parts: list[RenderableType] = []
    for i, chunk in enumerate(_fitting(rows, width)):
        parts.append(_metrics_table(chunk, f"scorecard {card.adapter}" if i == 0 else None))
    if card.compare:
        parts.append(_compare_table(card.adapter, card.compare))
    return Group(*parts)


def _fitting(rows: Sequence[ScorecardRow], width: int) -> list[list[ScorecardRow]]:
    """Consecutive groups of rows whose columns (widest cell, padding and the one-space column
    separator) fit ``width``."""
    label = max(len(name) for name, _ in METRICS) + _PADDING
    chunks: list[list[ScorecardRow]] = [[]]
    used = label + 2  # the table's two edges
    for row in rows:
        cells = [row.version or "all", *(value(row) or "—" for _, value in METRICS)]
        need = max(map(len, cells)) + _PADDING + 1
        if chunks[-1] and used + need > width:
            chunks.append([])
            used = label + 2
        chunks[-1].append(row)
        used += need
    return chunks


def _metrics_table(rows: Sequence[ScorecardRow], title: str | None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("", style="bold", no_wrap=True)
    for row in rows:
        table.add_column(row.version or "all", justify="right", overflow="fold")
    for label, value in METRICS:
        cells = [value(r) for r in rows]
        if label.startswith(" ") and not any(cells):
            continue  # an interval no version has (e.g. MSE before the log reports it)
        table.add_row(label, *(c or "—" for c in cells))
    return table


def _compare_table(adapter: str, tests: Sequence[AccuracyComparison]) -> Table:
    table = Table(
        title="binary accuracy, two-proportion z-test", box=box.SIMPLE_HEAD, title_justify="left",
        caption="p < 0.05: a difference unlikely to be noise", caption_justify="left",
    )  # fmt: skip
    for col in ("a vs b", "accuracy a / b", "difference", "z", "p"):
        table.add_column(col, justify="left" if col == "a vs b" else "right", overflow="fold")
    for t in tests:
        table.add_row(
            f"{_short(t.a, adapter)} vs {_short(t.b, adapter)}",
            f"{t.accuracy_a:.3f} / {t.accuracy_b:.3f}",
            f"{t.difference:+.3f}",
            f"{t.z:.2f}",
            f"{t.p_value:.3f}",
        )
    return table


def _short(ref: str, adapter: str) -> str:
    """``v2`` for a version of the scorecard's own adapter, else the whole ``name@version``."""
    name, _, version = ref.partition("@")
    return version if name == adapter else ref


def _interval(ci: ConfidenceInterval | None, fmt: str) -> str | None:
    return None if ci is None else f"{fmt.format(ci.low)}–{fmt.format(ci.high)}"


def _num(value: float | None, fmt: str) -> str | None:
    return None if value is None else fmt.format(value)
