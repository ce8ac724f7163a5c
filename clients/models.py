"""Typed response models of the forecast service, as the client sees its JSON.

These mirror the service's schemas without importing them (clients talk HTTP only). Every
model ignores fields it does not know, so a newer service does not break an older client;
fields the client needs are typed, the rest are optional.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, protected_namespaces=())


class Prediction(_Model):
    direction: Literal["up", "down"]
    bin: str  # U1..U5, U5+, D1..D5, D5+
    percent_low: float | None = None
    percent_high: float | None = None  # None for the open "more than 5%" bins
    text: str | None = None  # the model's own words, e.g. "Up by 1-2%"
    # "line" / "prose": read from the answer; "probe": the answer was cut off before its
    # Prediction line and the model then chose this bin (constrained)
    source: Literal["line", "prose", "probe"] = "line"


class Latency(_Model):
    """Seconds spent in each stage of one forecast, as the service measured them."""

    prompt_build_s: float | None = None
    queue_s: float | None = None
    ttft_s: float | None = None
    generation_s: float | None = None
    total_s: float | None = None


class Freshness(_Model):
    stale: bool = False
    stale_sources: list[str] = Field(default_factory=list)
    sources: dict[str, str] = Field(default_factory=dict)


class PromptOptions(_Model):
    """What a forecast's prompt holds. As an argument of the SDK's forecast calls, fields left
    ``None`` take the service's settings; in a :class:`Forecast`, the options it was made with."""

    weeks: int | None = None  # past weeks of prices and news, 1-4
    news_per_week: int | None = None  # headlines per week, 0-5
    with_financials: bool | None = None  # the latest basic financials


class Forecast(_Model):
    id: str | None = None
    ticker: str
    company: str | None = None
    as_of: dt.date | None = None  # the Sunday the prompt's data ends on
    week_start: dt.date | None = None
    week_end: dt.date | None = None  # the forecast is for week_start -> week_end
    prediction: Prediction | None = None  # None when the answer could not be parsed
    parse_error: str | None = None
    positive_developments: str | None = None
    concerns: str | None = None
    analysis: str | None = None
    raw_text: str | None = None
    adapter: str | None = None  # "name@version"
    base: str | None = None
    base_model: str | None = None
    arm: str | None = None
    options: PromptOptions | None = None
    freshness: Freshness = Field(default_factory=Freshness)
    latency: Latency = Field(default_factory=Latency)
    generated_tokens: int | None = None
    finish_reason: str | None = None  # "stop": whole; "length": cut at the token budget

    @property
    def adapter_name(self) -> str | None:
        return None if self.adapter is None else self.adapter.split("@", 1)[0]

    @property
    def adapter_version(self) -> str | None:
        if self.adapter is None or "@" not in self.adapter:
            return None
        return self.adapter.split("@", 1)[1]


class BatchItemError(_Model):
    ticker: str
    type: str
    message: str
    code: Any = None


class BatchResult(_Model):
    as_of: dt.date | None = None
    forecasts: list[Forecast] = Field(default_factory=list)
    errors: list[BatchItemError] = Field(default_factory=list)


class AdapterVersion(_Model):
    name: str
    version: str
    base: str | None = None
    base_model: str | None = None
    chat_format: str | None = None
    lora_id: int | None = None
    lora_rank: int | None = None
    loaded: bool = True
    retiring: bool = False
    inflight: int = 0
    served_as: str = "lora"  # "folded" (in the base's weights), "difference" or "lora"
    path: str | None = None  # relative to the adapter root
    aliases: list[str] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class AdapterList(_Model):
    adapters: list[AdapterVersion] = Field(default_factory=list)
    aliases: dict[str, str] = Field(default_factory=dict)  # alias -> "name@version"
    available: dict[str, list[str]] = Field(default_factory=dict)  # on disk, oldest first


class RoutingArm(_Model):
    name: str
    adapter: str  # an alias
    weight: float
    share: float | None = None  # normalised weight


class Routing(_Model):
    arms: list[RoutingArm] = Field(default_factory=list)
    shadow: str | None = None
    shadow_fraction: float = 1.0
    version: int | None = None


class ConfidenceInterval(_Model):
    low: float
    high: float
    level: float = 0.95


class ScorecardRow(_Model):
    adapter: str
    version: str | None = None
    forecasts: int = 0
    parsed: int = 0  # bin read from the answer's own text
    probed: int = 0  # bin chosen by the model after its cut-off answer
    scored: int = 0
    parse_failure_rate: float | None = None
    binary_accuracy: float | None = None
    binary_accuracy_ci: ConfidenceInterval | None = None  # Wilson, over the scored rows
    mse: float | None = None
    mse_ci: ConfidenceInterval | None = None
    mean_latency_s: float | None = None
    mean_ttft_s: float | None = None
    tokens_per_s: float | None = None


class AccuracyComparison(_Model):
    """Two-proportion z-test of binary accuracy, ``a`` against ``b`` (name@version)."""

    a: str
    b: str
    scored_a: int = 0
    scored_b: int = 0
    accuracy_a: float
    accuracy_b: float
    difference: float  # accuracy_a - accuracy_b
    z: float
    p_value: float  # two-sided


class Scorecard(_Model):
    adapter: str
    overall: ScorecardRow | None = None
    versions: list[ScorecardRow] = Field(default_factory=list)
    compare: list[AccuracyComparison] = Field(default_factory=list)


class StreamEvent(_Model):
    """One server-sent event; ``data`` is the decoded JSON (or the raw text)."""

    event: str
    data: Any = None
    id: str | None = None
