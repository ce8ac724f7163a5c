"""Dataset builder: tickers × weeks → rows, saved as JSONL, split by date (never at random).

Rows come from three places: weeks built from market data (:func:`build_rows`), the official
FinGPT Dow30 test split with GPT-4 answers (:func:`official_rows`) and the GPT-4 teacher rows
(:func:`teacher_rows`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from forecast.bins import Bin, bin_of_phrase, bin_of_return
from forecast.errors import NoDataError
from forecast.prompt import ForecastPrompt, Instruction, parse_user, render_user
from forecast.providers.base import MarketData
from forecast.templates import parse_llama2
from forecast.universe import members
from forecast.windows import DEFAULT_WINDOW, WindowConfig, build_prompt

SNAPSHOT = Path(__file__).parent / "snapshot"
OFFICIAL_FILE = "dow30_202305_202405_test_weeks1-6.jsonl"
TEACHER_GLOB = "teacher_gpt4_2023_*.jsonl"


class Row(BaseModel):
    model_config = ConfigDict(frozen=True)

    ticker: str
    as_of: dt.date
    prompt: ForecastPrompt
    user_message: str  # the rendered FinGPT user text; chat formats wrap it at use
    label: Bin | None
    last_week: Bin  # the bin of the week before as_of (the momentum baseline)
    answer: str | None = None  # teacher / reference answer, when one exists
    source: Literal["market", "official", "teacher"] = "market"

    @property
    def key(self) -> str:
        return f"{self.ticker}@{self.as_of.isoformat()}"


def _last_week_bin(prompt: ForecastPrompt) -> Bin:
    w = prompt.weeks[-1]
    return bin_of_return(w.end_price / w.start_price - 1.0)


def make_row(
    prompt: ForecastPrompt, label: Bin | None, answer: str | None, source: Literal["market", "official", "teacher"]
) -> Row:
    return Row(
        ticker=prompt.ticker, as_of=prompt.as_of, prompt=prompt, user_message=render_user(prompt),
        label=label, last_week=_last_week_bin(prompt), answer=answer, source=source,
    )


def build_rows(
    market: MarketData,
    days: Iterable[dt.date],
    config: WindowConfig = DEFAULT_WINDOW,
    tickers: Sequence[str] | None = None,
    *,
    skip_missing: bool = True,
) -> list[Row]:
    """One row per (Dow 30 member on that date, week); ``tickers`` narrows the universe."""
    rows: list[Row] = []
    for day in days:
        universe = members(day)
        for ticker in tickers if tickers is not None else universe:
            if ticker not in universe:
                continue
            try:
                built = build_prompt(market, ticker, day, config)
            except NoDataError:
                if skip_missing:
                    continue
                raise
            rows.append(make_row(built.prompt, built.label, None, "market"))
    return rows


def official_rows(snapshot: Path = SNAPSHOT) -> list[Row]:
    """The official FinGPT Dow30 test rows (Llama-2 prompts, GPT-4 answers, labels)."""
    rows = []
    for line in (snapshot / "fingpt" / OFFICIAL_FILE).read_text().splitlines():
        raw = json.loads(line)
        prompt = parse_llama2(raw["prompt"])
        rows.append(make_row(prompt, bin_of_phrase(raw["label"]), raw["answer"], "official"))
    return rows


def teacher_rows(snapshot: Path = SNAPSHOT) -> list[Row]:
    """GPT-4 teacher rows: the prompt states the realized bin and asks for its explanation."""
    rows = []
    for path in sorted((snapshot / "fingpt").glob(TEACHER_GLOB)):
        for line in path.read_text().splitlines():
            raw = json.loads(line)
            prompt = parse_user(raw["prompt"], with_system=False)
            if prompt.instruction is not Instruction.EXPLAIN:
                raise ValueError(f"teacher row without a given label: {path.name}")
            rows.append(make_row(prompt, prompt.assumed_bin, raw["answer"], "teacher"))
    return rows


def split_by_date(rows: Sequence[Row], cutoff: dt.date) -> tuple[list[Row], list[Row]]:
    """Rows whose target week ends on or before ``cutoff`` train; later ones evaluate."""
    train = [r for r in rows if r.prompt.target_end <= cutoff]
    held = [r for r in rows if r.as_of >= cutoff]
    return train, held


def save_jsonl(rows: Iterable[Row], path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as f:
        for r in rows:
            f.write(r.model_dump_json() + "\n")
            n += 1
    return n


def load_jsonl(path: Path) -> list[Row]:
    return [Row.model_validate_json(line) for line in path.read_text().splitlines() if line]
