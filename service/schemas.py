"""Request and response bodies of the HTTP API (what ``clients.models`` mirrors)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from forecast.answer import ParsedAnswer
from forecast.windows import WEEK, BuiltPrompt
from service.settings import MAX_ROUTING_WEIGHT

TICKER = r"^[A-Za-z][A-Za-z.\-]{0,9}$"
ADAPTER_TARGET = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(@[A-Za-z0-9][A-Za-z0-9._-]{0,127})?$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MAX_WEEKS = 4  # per-request prompt options: FinGPT-Forecaster's demo offers 1-4 past weeks
MAX_NEWS_PER_WEEK = 5


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class PromptOptionsIn(_Body):
    """What the prompt holds; each left out takes the service's setting. Strictly typed (JSON
    numbers and booleans, no strings), checked against the engines' context before any data
    is fetched."""

    weeks: StrictInt | None = Field(
        default=None, ge=1, le=MAX_WEEKS, description="Past weeks of prices and news (1-4)."
    )
    news_per_week: StrictInt | None = Field(
        default=None, ge=0, le=MAX_NEWS_PER_WEEK, description="Headlines per week (0-5)."
    )
    with_financials: StrictBool | None = Field(
        default=None, description="Include the latest basic financials."
    )


class ForecastRequest(PromptOptionsIn):
    ticker: str = Field(pattern=TICKER, examples=["AAPL"])
    as_of: dt.date | None = Field(
        default=None, description="Any day; the forecast is for the week after its Sunday."
    )
    adapter: str | None = Field(
        default=None, pattern=ADAPTER_TARGET,
        description="An alias or name@version; default: the A/B routing decides.",
    )
    stream: bool = False


class BatchRequest(PromptOptionsIn):
    tickers: list[Annotated[str, Field(pattern=TICKER)]] | None = Field(
        default=None, min_length=1, max_length=64,
        description="Default: the Dow 30 members on that date.",
    )
    as_of: dt.date | None = None
    adapter: str | None = Field(default=None, pattern=ADAPTER_TARGET)
    stream: bool = Field(default=False, description="Server-sent events, one per result.")


class Prediction(BaseModel):
    direction: Literal["up", "down"]
    bin: str
    percent_low: float
    percent_high: float | None  # None for the open "more than 5%" bins
    text: str
    source: Literal["line", "prose", "probe"] = Field(
        default="line",
        description="Where the bin was read: the answer's Prediction line, its analysis prose, "
        "or (answer cut off before its Prediction line) the model's constrained choice of bin "
        "after the appended Prediction header.",
    )

    @classmethod
    def of(cls, parsed: ParsedAnswer) -> Prediction:
        low, high = parsed.prediction.percent_range
        source = parsed.prediction_source
        return cls(
            direction="up" if parsed.prediction.is_up else "down", bin=parsed.prediction.value,
            percent_low=low, percent_high=high, text=parsed.prediction_text,
            source="line" if source == "label" else source,
        )


class Latency(BaseModel):
    prompt_build_s: float | None = None
    queue_s: float | None = None
    ttft_s: float | None = None
    generation_s: float | None = None
    total_s: float | None = None


class Freshness(BaseModel):
    stale: bool = False
    stale_sources: list[str] = Field(default_factory=list)
    sources: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, built: BuiltPrompt) -> Freshness:
        return cls(
            stale=bool(built.stale_sources), stale_sources=list(built.stale_sources),
            sources=dict(built.sources),
        )


class PromptOptions(BaseModel):
    """The prompt options a forecast was made with (the request's, else the settings')."""

    weeks: int
    news_per_week: int
    with_financials: bool


class ForecastResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: str
    ticker: str
    company: str
    as_of: dt.date  # the Sunday the prompt's data ends on
    week_start: dt.date
    week_end: dt.date  # the forecast is for week_start -> week_end
    prediction: Prediction | None  # None when the answer could not be parsed
    parse_error: str | None = None
    positive_developments: str | None = None
    concerns: str | None = None
    analysis: str | None = None
    raw_text: str
    adapter: str  # name@version
    base: str
    base_model: str
    arm: str
    options: PromptOptions
    freshness: Freshness
    latency: Latency
    generated_tokens: int
    # Why generation ended, as the engine says: "stop" (the answer is whole), "length" (cut at
    # max_new_tokens), "abort"; None when the engine did not say.
    finish_reason: str | None = None

    @classmethod
    def of_answer(
        cls, text: str, read: tuple[ParsedAnswer | None, str | None], built: BuiltPrompt,
        **fields: Any,
    ) -> ForecastResponse:
        """The response for the answer ``text`` to the prompt ``built``, ``read`` as the parsed
        answer or the parse error; ``fields`` are the rest (id, ticker, adapter, latency, ...)."""
        parsed, parse_error = read
        return cls(
            company=built.prompt.profile.name,
            as_of=built.prompt.as_of,
            week_start=built.prompt.as_of,
            week_end=built.prompt.as_of + WEEK,
            prediction=None if parsed is None else Prediction.of(parsed),
            parse_error=parse_error,
            positive_developments=parsed.positive if parsed else None,
            concerns=parsed.concerns if parsed else None,
            analysis=parsed.analysis if parsed else None,
            raw_text=text,
            freshness=Freshness.of(built),
            **fields,
        )


class ErrorDetail(BaseModel):
    type: str
    message: str
    code: str | int | None = None


class ErrorResponse(BaseModel):
    """The one error shape of every 4xx/5xx answer (OpenAI's)."""

    error: ErrorDetail


class BatchItemError(BaseModel):
    ticker: str
    type: str
    message: str
    code: str | None = None


class BatchResponse(BaseModel):
    as_of: dt.date
    forecasts: list[ForecastResponse]
    errors: list[BatchItemError]


class LoadAdapterRequest(_Body):
    name: str = Field(pattern=NAME)
    version: str | None = Field(default=None, pattern=NAME, description="Default: newest.")
    promote: bool = Field(default=True, description="Make it serve the alias at once.")
    alias: str | None = Field(default=None, pattern=NAME, description="Default: the name.")


class PromoteRequest(_Body):
    alias: str = Field(pattern=NAME)
    adapter: str = Field(pattern=ADAPTER_TARGET, description="name@version, loaded.")


class AdapterVersionOut(BaseModel):
    name: str
    version: str
    base: str
    base_model: str
    chat_format: str
    lora_id: int
    lora_rank: int
    loaded: bool = True
    retiring: bool = False
    inflight: int = 0
    # served how now: "folded" (in the base's weights, no LoRA), "difference" (a LoRA against
    # the folded version) or "lora" (its own LoRA)
    served_as: Literal["lora", "folded", "difference"] = "lora"
    path: str  # relative to the adapter root
    aliases: list[str]
    metrics: dict[str, object] = Field(default_factory=dict)


class AdapterList(BaseModel):
    adapters: list[AdapterVersionOut]
    aliases: dict[str, str]  # alias -> name@version
    available: dict[str, list[str]]  # on disk: name -> versions, oldest first


class ArmIn(_Body):
    name: str = Field(pattern=NAME, description="Not 'direct' or 'shadow' (reserved labels).")
    adapter: str = Field(pattern=NAME, description="An alias.")
    weight: float = Field(ge=0, le=MAX_ROUTING_WEIGHT, allow_inf_nan=False)


class RoutingIn(_Body):
    arms: list[ArmIn] = Field(min_length=1, max_length=16)
    shadow: str | None = Field(default=None, pattern=NAME)
    shadow_fraction: float = Field(default=1.0, ge=0, le=1)


class ArmOut(BaseModel):
    name: str
    adapter: str
    weight: float
    share: float


class RoutingOut(BaseModel):
    arms: list[ArmOut]
    shadow: str | None
    shadow_fraction: float
    version: int


class UniverseOut(BaseModel):
    as_of: dt.date = Field(description="The date asked (default: the service's default day).")
    members: list[str] = Field(description="The Dow 30 members on that date, sorted.")
    today: dt.date = Field(description="The latest date a forecast may be asked for.")


class AdapterSummary(BaseModel):
    """A loaded adapter version as the page shows it: what ``/metrics`` already publishes of
    it (name, version, aliases) and its held-out evaluation from its manifest."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    base: str
    base_model: str
    aliases: list[str]
    evaluation: dict[str, float] = Field(
        default_factory=dict, description="The manifest's numeric metrics (binary_accuracy, mse, ...)."
    )


class PageAdapters(BaseModel):
    """The page's read-only view of the adapters and the live A/B split."""

    adapters: list[AdapterSummary]
    routing: RoutingOut


class ConfidenceInterval(BaseModel):
    low: float
    high: float
    level: float = 0.95


class ScorecardOut(BaseModel):
    adapter: str
    version: str | None
    forecasts: int
    parsed: int  # the bin read from the answer's own text
    probed: int  # the bin chosen by the model after its cut-off answer
    scored: int
    parse_failure_rate: float | None
    binary_accuracy: float | None
    binary_accuracy_ci: ConfidenceInterval | None = Field(
        default=None, description="Wilson score interval of binary_accuracy over the scored rows."
    )
    mse: float | None
    mse_ci: ConfidenceInterval | None = Field(
        default=None,
        description="Normal-approximation interval of the MSE, when the log reports the mean of "
        "the squared errors' squares; else null.",
    )
    mean_latency_s: float | None
    mean_ttft_s: float | None
    tokens_per_s: float | None


class AccuracyComparison(BaseModel):
    """Pooled two-proportion z-test of binary accuracy, ``a`` against ``b`` (name@version)."""

    a: str
    b: str
    scored_a: int
    scored_b: int
    accuracy_a: float
    accuracy_b: float
    difference: float  # accuracy_a - accuracy_b
    z: float
    p_value: float  # two-sided


class ScorecardResponse(BaseModel):
    adapter: str
    overall: ScorecardOut | None
    versions: list[ScorecardOut]
    compare: list[AccuracyComparison] = Field(
        default_factory=list,
        description="Every pair of scored versions (newer as a), and with ?vs= each version "
        "against each version of the other adapter.",
    )
