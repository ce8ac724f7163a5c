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


class Forecast(_Model):
    ticker: str
    company: str | None = None
    as_of: dt.date | None = None
    week_start: dt.date | None = None
    week_end: dt.date | None = None
    prediction: Prediction | None = None  # None when the answer could not be parsed
    positive_developments: str | None = None
    concerns: str | None = None
    analysis: str | None = None
    raw_text: str | None = None
    adapter: str | None = None  # "name@version"
    base_model: str | None = None
    arm: str | None = None
    freshness: Freshness = Field(default_factory=Freshness)
    latency: Latency = Field(default_factory=Latency)
    generated_tokens: int | None = None

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
    forecasts: list[Forecast] = Field(default_factory=list)
    errors: list[BatchItemError] = Field(default_factory=list)


class AdapterVersion(_Model):
    name: str
    version: str
    base_model: str | None = None
    lora_id: int | None = None
    loaded: bool = True
    path: str | None = None
    aliases: list[str] = Field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class AdapterList(_Model):
    adapters: list[AdapterVersion] = Field(default_factory=list)
    aliases: dict[str, str] = Field(default_factory=dict)  # alias -> "name@version"


class RoutingArm(_Model):
    name: str
    adapter: str
    weight: float


class Routing(_Model):
    arms: list[RoutingArm] = Field(default_factory=list)
    shadow: str | None = None
    version: int | None = None


class Scorecard(_Model):
    adapter: str
    version: str | None = None
    forecasts: int = 0
    scored: int = 0
    binary_accuracy: float | None = None
    mse: float | None = None
    mean_latency_s: float | None = None


class StreamToken(_Model):
    """One ``token`` event of a streamed forecast."""

    text: str
    index: int | None = None


class StreamEvent(_Model):
    """One server-sent event; ``data`` is the decoded JSON (or the raw text)."""

    event: str
    data: Any = None
    id: str | None = None
