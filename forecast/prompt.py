"""The one structured prompt model of the product, and its FinGPT text rendering.

A :class:`ForecastPrompt` holds everything a forecast prompt says (company profile, N weeks of
prices and news, optional basic financials and technical indicators, the instruction). It
renders to the FinGPT-Forecaster user message (:func:`render_user`) and parses back from one
(:func:`parse_user`), byte for byte. Chat formats wrap it (:mod:`forecast.templates`).

The official FinGPT prompts call the stock's move a "cryptocurrency price movement"; the
product's template says "stock price movement" (see :data:`OFFICIAL_DEFECT`).
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from forecast.bins import Bin, bin_of_phrase
from forecast.errors import PromptParseError
from forecast.types import CompanyProfile

SYSTEM_PROMPT = (
    "You are a seasoned stock market analyst. Your task is to list the positive developments "
    "and potential concerns for companies based on relevant news and basic financials from the "
    "past weeks, then provide an analysis and prediction for the companies' stock price movement "
    "for the upcoming week. Your answer format should be as follows:\n\n"
    "[Positive Developments]:\n1. ...\n\n[Potential Concerns]:\n1. ...\n\n"
    "[Prediction & Analysis]\nPrediction: ...\nAnalysis: ...\n"
)

OFFICIAL_DEFECT = ("cryptocurrency price movement", "stock price movement")
NO_NEWS = "No relative news reported."
NO_FINANCIALS = "[Basic Financials]:\n\nNo basic financial reported."


class Instruction(StrEnum):
    PREDICT = "predict"  # serving and evaluation: the model makes the prediction
    EXPLAIN = "explain"  # teacher prompts: the label is given, the model explains it


class NewsLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    headline: str
    summary: str


class WeekBlock(BaseModel):
    """One past week: closing prices at both ends and the selected news."""

    model_config = ConfigDict(frozen=True)

    start: dt.date
    end: dt.date
    start_price: float
    end_price: float
    increased: bool  # from the unrounded prices, so equal rounded prices still render right
    news: tuple[NewsLine, ...] = ()


class FinancialsBlock(BaseModel):
    model_config = ConfigDict(frozen=True)

    period: dt.date
    metrics: dict[str, float | int | str]


class ForecastPrompt(BaseModel):
    """Everything one weekly forecast prompt contains."""

    model_config = ConfigDict(frozen=True)

    ticker: str
    profile: CompanyProfile
    weeks: tuple[WeekBlock, ...] = Field(min_length=1)
    financials: FinancialsBlock | None = None
    indicators: str | None = None  # optional technical-indicator section, pre-rendered
    as_of: dt.date  # first day of the predicted week; nothing after it is in the prompt
    target_end: dt.date  # last day of the predicted week
    instruction: Instruction = Instruction.PREDICT
    assumed_bin: Bin | None = None  # the label, for EXPLAIN (teacher) prompts only
    with_system: bool = True


def render_company(p: CompanyProfile) -> str:
    """The company paragraph; the market-cap sentence only when cap and share count are known
    (the prompt builder sets the cap at ``as_of``, so "as of today" means the prompt's date)."""
    size = ""
    if p.market_cap is not None and p.shares_outstanding is not None:
        size = (
            f" As of today, {p.name} has a market capitalization of {p.market_cap:.2f} in "
            f"{p.currency}, with {p.shares_outstanding:.2f} shares outstanding."
        )
    return (
        f"[Company Introduction]:\n\n{p.name} is a leading entity in the {p.industry} sector. "
        f"Incorporated and publicly traded since {p.ipo}, the company has established its "
        f"reputation as one of the key players in the market.{size}\n\n{p.name} operates "
        f"primarily in the {p.country}, trading under the ticker {p.ticker} on the "
        f"{p.exchange}. As a dominant force in the {p.industry} space, the company continues to "
        f"innovate and drive progress within the industry."
    )


def render_week(ticker: str, w: WeekBlock) -> str:
    term = "increased" if w.increased else "decreased"
    head = (
        f"From {w.start.isoformat()} to {w.end.isoformat()}, {ticker}'s stock price {term} from "
        f"{w.start_price:.2f} to {w.end_price:.2f}. News during this period are listed below:\n\n"
    )
    if not w.news:
        return head + NO_NEWS
    return head + "\n".join(f"[Headline]: {n.headline}\n[Summary]: {n.summary}\n" for n in w.news)


def render_financials(ticker: str, f: FinancialsBlock | None) -> str:
    if f is None:
        return NO_FINANCIALS
    body = "\n".join(f"{k}: {v}" for k, v in f.metrics.items())
    return (
        f"Some recent basic financials of {ticker}, reported at {f.period.isoformat()}, "
        f"are presented below:\n\n[Basic Financials]:\n\n{body}"
    )


def render_instruction(p: ForecastPrompt) -> str:
    period = f"{p.as_of.isoformat()} to {p.target_end.isoformat()}"
    text = (
        f"Based on all the information before {p.as_of.isoformat()}, let's first analyze the "
        f"positive developments and potential concerns for {p.ticker}. Come up with 2-4 most "
        f"important factors respectively and keep them concise. Most factors should be inferred "
        f"from company related news. "
    )
    if p.instruction is Instruction.EXPLAIN:
        if p.assumed_bin is None:
            raise ValueError("an EXPLAIN prompt needs assumed_bin")
        return text + (
            f"Then let's assume your prediction for next week ({period}) is "
            f"{p.assumed_bin.phrase()}. Provide a summary analysis to support your prediction. "
            f"The prediction result need to be inferred from your analysis at the end, and thus "
            f"not appearing as a foundational factor of your analysis."
        )
    return text + (
        f"Then make your prediction of the {p.ticker} stock price movement for next week "
        f"({period}). Provide a summary analysis to support your prediction."
    )


def render_user(p: ForecastPrompt) -> str:
    """The user message: company, weeks, financials (+ indicators), instruction."""
    body = render_company(p.profile) + "\n"
    for w in p.weeks:
        body += "\n" + render_week(p.ticker, w)
    body += "\n" + render_financials(p.ticker, p.financials)
    if p.indicators:
        body += "\n\n[Technical Indicators]:\n\n" + p.indicators
    return body + "\n\n" + render_instruction(p)


# --- parsing a rendered user message back into the model -------------------------------------

_COMPANY = re.compile(
    r"\[Company Introduction\]:\n\n(?P<name>.+?) is a leading entity in the (?P<industry>.*?) sector\. "
    r"Incorporated and publicly traded since (?P<ipo>\S*), the company has established its "
    r"reputation as one of the key players in the market\.(?: As of today, (?P=name) has a market "
    r"capitalization of (?P<cap>[-\d.]+) in (?P<currency>\S*), with (?P<shares>[-\d.]+) shares "
    r"outstanding\.)?\n\n(?P=name) operates primarily in the (?P<country>.*?), trading under the "
    r"ticker (?P<ticker>\S+) on the (?P<exchange>.*?)\. As a dominant force in the (?P=industry) "
    r"space, the company continues to innovate and drive progress within the industry\.\n",
    re.DOTALL,
)
_WEEK_HEAD = re.compile(
    r"\nFrom (?P<start>\d{4}-\d\d-\d\d) to (?P<end>\d{4}-\d\d-\d\d), (?P<ticker>\S+)'s stock "
    r"price (?P<term>increased|decreased) from (?P<sp>[-\d.]+) to (?P<ep>[-\d.]+)\. News during "
    r"this period are listed below:\n\n"
)
_FIN_HEAD = re.compile(
    r"\nSome recent basic financials of (?P<ticker>\S+), reported at (?P<period>\d{4}-\d\d-\d\d), "
    r"are presented below:\n\n\[Basic Financials\]:\n\n"
)
_INSTRUCTION = re.compile(
    r"\n\nBased on all the information before (?P<asof>\d{4}-\d\d-\d\d), let's first analyze",
)
_PERIOD = re.compile(r"next week \((?P<a>\d{4}-\d\d-\d\d) to (?P<b>\d{4}-\d\d-\d\d)\) is (?P<bin>.+?)\. Provide")
_PERIOD_PREDICT = re.compile(r"next week \((?P<a>\d{4}-\d\d-\d\d) to (?P<b>\d{4}-\d\d-\d\d)\)\. Provide")
_NEWS = re.compile(r"\[Headline\]: (?P<h>.*?)\n\[Summary\]: (?P<s>.*?)\n(?=\n\[Headline\]: |\Z)", re.DOTALL)


def _number(text: str) -> float | int | str:
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return text
        return value if str(value) == text else text


def _parse_news(block: str) -> tuple[NewsLine, ...]:
    if block == NO_NEWS:
        return ()
    items = tuple(NewsLine(headline=m["h"], summary=m["s"]) for m in _NEWS.finditer(block))
    if not items:
        raise PromptParseError(f"unreadable news block: {block[:80]!r}")
    return items


def parse_user(text: str, *, with_system: bool = True) -> ForecastPrompt:
    """Parse a FinGPT user message (the product's or an official one) into the model."""
    text = text.replace(*OFFICIAL_DEFECT)
    company = _COMPANY.match(text)
    instr = _INSTRUCTION.search(text)
    if company is None or instr is None:
        raise PromptParseError("not a FinGPT forecast prompt (company or instruction missing)")
    ticker = company["ticker"]
    profile = CompanyProfile(
        ticker=ticker, name=company["name"], industry=company["industry"], ipo=company["ipo"],
        market_cap=None if company["cap"] is None else float(company["cap"]),
        shares_outstanding=None if company["shares"] is None else float(company["shares"]),
        currency=company["currency"] or "", country=company["country"], exchange=company["exchange"],
    )
    middle = text[company.end() : instr.start()]
    fin_at = _FIN_HEAD.search(middle)
    indicators: str | None = None
    if "\n\n[Technical Indicators]:\n\n" in middle:
        middle, indicators = middle.split("\n\n[Technical Indicators]:\n\n", 1)
    financials: FinancialsBlock | None = None
    fin_at = _FIN_HEAD.search(middle)
    if fin_at is not None:
        rows = [line.split(": ", 1) for line in middle[fin_at.end() :].split("\n")]
        financials = FinancialsBlock(
            period=dt.date.fromisoformat(fin_at["period"]),
            metrics={k: _number(v) for k, v in rows},
        )
        weeks_text = middle[: fin_at.start()]
    elif middle.endswith("\n" + NO_FINANCIALS):
        weeks_text = middle[: -len(NO_FINANCIALS) - 1]
    else:
        raise PromptParseError("basic-financials section missing")
    heads = list(_WEEK_HEAD.finditer(weeks_text))
    if not heads:
        raise PromptParseError("no weekly price section")
    weeks = []
    for i, h in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(weeks_text)
        weeks.append(WeekBlock(
            start=dt.date.fromisoformat(h["start"]), end=dt.date.fromisoformat(h["end"]),
            start_price=float(h["sp"]), end_price=float(h["ep"]),
            increased=h["term"] == "increased", news=_parse_news(weeks_text[h.end() : end]),
        ))
    tail = text[instr.start() :]
    explain = _PERIOD.search(tail)
    predict = _PERIOD_PREDICT.search(tail)
    period = explain or predict
    if period is None:
        raise PromptParseError("target week missing from the instruction")
    return ForecastPrompt(
        ticker=ticker, profile=profile, weeks=tuple(weeks), financials=financials,
        indicators=indicators, as_of=dt.date.fromisoformat(instr["asof"]),
        target_end=dt.date.fromisoformat(period["b"]),
        instruction=Instruction.EXPLAIN if explain else Instruction.PREDICT,
        assumed_bin=bin_of_phrase(explain["bin"]) if explain else None,
        with_system=with_system,
    )
