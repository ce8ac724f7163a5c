"""Prometheus metrics of one app, on its own ``CollectorRegistry`` (never the global one).

Names carry the ``forecast_`` prefix and base units; labels are of bounded cardinality
(adapter, version, arm, route, status, base) and never a ticker. Samples per second are
``rate(forecast_forecasts_total[1m])`` per adapter and version; tokens per second
``rate(forecast_generated_tokens_total[1m])``. Engine scheduler stats and the market-data
cache counters are read at scrape time by :class:`_LiveCollector`; vLLM's own ``vllm:*``
metrics of each engine, labelled ``engine=<base>``, by
:class:`~service.engine_metrics.EngineMetrics`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.engine import EngineStats
from service.engine_metrics import EngineMetrics
from service.schemas import ForecastResponse

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
FAST_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
RATE_BUCKETS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
FORECAST = ("adapter", "version", "arm")
# Generations of the OpenAI-compatible routes: route is "openai_chat" or "openai_completions".
GENERATION = ("route", "adapter", "version", "arm")
# The adapter label of failed loads of a name that has no version loaded: one series for all
# of them, whatever names an admin sends. (A real name starts with a letter or digit.)
NEW_ADAPTER = "_new"


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "forecast_requests", "Forecast requests by outcome (HTTP status).",
            ("route", "adapter", "version", "arm", "status"), registry=r,
        )
        self.forecasts = Counter(
            "forecast_forecasts", "Forecasts produced (rate() = samples/s).", FORECAST, registry=r
        )
        self.latency = Histogram(
            "forecast_request_duration_seconds", "End-to-end time of one forecast.",
            FORECAST, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "forecast_time_to_first_token_seconds", "Submit to first generated token.",
            FORECAST, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue = Histogram(
            "forecast_queue_seconds", "Time waiting in the engine before scheduling.",
            FORECAST, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.generation = Histogram(
            "forecast_generation_seconds", "First to last generated token.",
            FORECAST, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.prompt_build = Histogram(
            "forecast_prompt_build_seconds", "Building the prompt from market data.",
            FORECAST, buckets=FAST_BUCKETS, registry=r,
        )
        self.tokens = Counter(
            "forecast_generated_tokens", "Generated tokens (rate() = tokens/s).", FORECAST,
            registry=r,
        )
        self.decode_rate = Histogram(
            "forecast_decode_tokens_per_second", "Per-forecast decode speed.",
            FORECAST, buckets=RATE_BUCKETS, registry=r,
        )
        self.parse_failures = Counter(
            "forecast_parse_failures", "Answers the FinGPT parser could not read.", FORECAST,
            registry=r,
        )
        self.probes = Counter(
            "forecast_probed",
            "Answers cut off before their Prediction line whose bin the model then chose.",
            FORECAST, registry=r,
        )
        self.probe_failures = Counter(
            "forecast_probe_failures", "Bin probes the engine failed (no prediction then).",
            FORECAST, registry=r,
        )
        self.stale = Counter(
            "forecast_stale_forecasts", "Forecasts built on stale (cached) data.", ("source",),
            registry=r,
        )
        self.inflight = Gauge(
            "forecast_inflight_requests", "Requests holding an adapter version.",
            ("adapter", "version"), registry=r,
        )
        self.swaps = Counter(
            "forecast_adapter_swaps", "Adapter loads that flip an alias, by result.",
            ("adapter", "result"), registry=r,
        )
        self.swaps.labels(NEW_ADAPTER, "failed")  # exported at 0 from the start
        self.swap_seconds = Histogram(
            "forecast_adapter_swap_duration_seconds", "Load + flip time of a hot-swap.",
            ("adapter",), buckets=LATENCY_BUCKETS, registry=r,
        )
        self.adapter_loaded = Gauge(
            "forecast_adapter_loaded", "1 per adapter version loaded in an engine.",
            ("adapter", "version", "base"), registry=r,
        )
        self.alias = Gauge(
            "forecast_adapter_alias", "1 for the version each alias serves.",
            ("alias", "adapter", "version"), registry=r,
        )
        self.folded = Gauge(
            "forecast_adapter_folded",
            "1 for the version folded into its base's weights (served with no LoRA).",
            ("base", "adapter", "version"), registry=r,
        )
        self.fold_seconds = Histogram(
            "forecast_adapter_fold_phase_seconds",
            "Time of each phase of moving a base's fold (prepare, differences, drain, fold, cleanup).",
            ("base", "phase"), buckets=LATENCY_BUCKETS, registry=r,
        )
        self.fold_failures = Counter(
            "forecast_adapter_fold_failures",
            "Folds that failed (the weights stayed as they were; every version served exactly).",
            ("base",), registry=r,
        )
        self.routing_weight = Gauge(
            "forecast_routing_weight", "Normalised A/B weight of each arm.", ("arm", "alias"),
            registry=r,
        )
        self.accuracy = Gauge(
            "forecast_realized_binary_accuracy", "Realized up/down accuracy of scored forecasts.",
            ("adapter", "version"), registry=r,
        )
        self.mse = Gauge(
            "forecast_realized_mse", "Realized MSE on bin midpoints (percent squared).",
            ("adapter", "version"), registry=r,
        )
        self.scored = Gauge(
            "forecast_scored_forecasts", "Forecasts whose target week closed and was scored.",
            ("adapter", "version"), registry=r,
        )
        self.engine_up = Gauge(
            "forecast_engine_up", "1 while the base's engine serves; 0 while it restarts.",
            ("base",), registry=r,
        )
        self.engine_restarts = Counter(
            "forecast_engine_restarts", "Engine restarts after a death, by result.",
            ("base", "result"), registry=r,
        )
        self.engine_stall_restarts = Counter(
            "forecast_engine_stall_restarts",
            "Engines treated as dead because their requests made no progress (then restarted).",
            ("base",), registry=r,
        )
        self.provider_timeouts = Counter(
            "forecast_provider_timeouts",
            "Forecasts refused (503) because their market data was not gathered in time.",
            registry=r,
        )
        self.gen_latency = Histogram(
            "forecast_openai_request_duration_seconds",
            "End-to-end time of one OpenAI-compatible generation.", GENERATION,
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.gen_ttft = Histogram(
            "forecast_openai_time_to_first_token_seconds",
            "Submit to first generated token, OpenAI-compatible routes.", GENERATION,
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.gen_tokens = Counter(
            "forecast_openai_generated_tokens",
            "Tokens generated on the OpenAI-compatible routes (rate() = tokens/s).", GENERATION,
            registry=r,
        )
        self.gen_decode_rate = Histogram(
            "forecast_openai_decode_tokens_per_second",
            "Per-request decode speed, OpenAI-compatible routes.", GENERATION,
            buckets=RATE_BUCKETS, registry=r,
        )
        self._alias_labels: dict[str, tuple[str, str]] = {}
        self._folded_labels: dict[str, tuple[str, str]] = {}

    def observe(self, r: ForecastResponse, labels: tuple[str, str, str]) -> None:
        """A finished forecast's counters and latencies under (adapter, version, arm)."""
        self.forecasts.labels(*labels).inc()
        self.tokens.labels(*labels).inc(r.generated_tokens)
        lat = r.latency
        for histogram, value in (
            (self.latency, lat.total_s), (self.ttft, lat.ttft_s), (self.queue, lat.queue_s),
            (self.generation, lat.generation_s), (self.prompt_build, lat.prompt_build_s),
        ):
            if value is not None:
                histogram.labels(*labels).observe(value)
        if lat.generation_s and r.generated_tokens > 1:
            self.decode_rate.labels(*labels).observe((r.generated_tokens - 1) / lat.generation_s)
        if r.parse_error is not None:
            self.parse_failures.labels(*labels).inc()
        if r.prediction is not None and r.prediction.source == "probe":
            self.probes.labels(*labels).inc()
        for source in r.freshness.stale_sources:
            self.stale.labels(source).inc()

    def observe_generation(
        self, labels: tuple[str, str, str, str], *, total_s: float, ttft_s: float | None,
        generation_s: float | None, tokens: int,
    ) -> None:
        """A finished OpenAI-compatible generation under (route, adapter, version, arm)."""
        self.gen_latency.labels(*labels).observe(total_s)
        self.gen_tokens.labels(*labels).inc(tokens)
        if ttft_s is not None:
            self.gen_ttft.labels(*labels).observe(ttft_s)
        if generation_s and tokens > 1:
            self.gen_decode_rate.labels(*labels).observe((tokens - 1) / generation_s)

    def set_alias(self, alias: str, adapter: str, version: str) -> None:
        self.drop_alias(alias)
        self._alias_labels[alias] = (adapter, version)
        self.alias.labels(alias, adapter, version).set(1)

    def drop_alias(self, alias: str) -> None:
        old = self._alias_labels.pop(alias, None)
        if old is not None:
            self.alias.remove(alias, *old)

    def set_folded(self, base: str, ref: str | None) -> None:
        """``ref`` (``name@version``) is folded into ``base``'s weights now; None: nothing."""
        old = self._folded_labels.pop(base, None)
        if old is not None:
            self.folded.remove(base, *old)
        if ref is not None:
            name, _, version = ref.partition("@")
            self._folded_labels[base] = (name, version)
            self.folded.labels(base, name, version).set(1)

    def forget_version(self, adapter: str, version: str, base: str) -> None:
        """Drop the per-version gauges of an unloaded version (counters keep their history)."""
        for gauge, labels in (
            (self.adapter_loaded, (adapter, version, base)), (self.inflight, (adapter, version))
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    def set_weights(self, weights: Iterable[tuple[str, str, float]]) -> None:
        self.routing_weight.clear()
        for arm, alias, weight in weights:
            self.routing_weight.labels(arm, alias).set(weight)

    def watch(
        self,
        engines: Callable[[], Mapping[str, EngineStats]],
        cache_counters: Callable[[], Mapping[str, int]],
    ) -> None:
        """Read engine stats and cache counters at every scrape."""
        self.registry.register(_LiveCollector(engines, cache_counters))

    def export_engine_metrics(self, engines: Callable[[], Mapping[str, Any]]) -> None:
        """Expose the ``vllm:*`` metrics of the engines ``engines()`` returns at each scrape."""
        self.registry.register(EngineMetrics(engines))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    def __init__(
        self,
        engines: Callable[[], Mapping[str, EngineStats]],
        cache_counters: Callable[[], Mapping[str, int]],
    ) -> None:
        self._engines = engines
        self._cache = cache_counters

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        kv = GaugeMetricFamily(
            "forecast_engine_kv_cache_usage_ratio", "KV-cache blocks in use (0..1).", labels=["base"]
        )
        running = GaugeMetricFamily(
            "forecast_engine_running_requests", "Requests the engine is running.", labels=["base"]
        )
        waiting = GaugeMetricFamily(
            "forecast_engine_waiting_requests", "Requests waiting in the engine.", labels=["base"]
        )
        start = GaugeMetricFamily(
            "forecast_engine_start_seconds", "How long the base's current engine took to start.",
            labels=["base"],
        )
        for base, stats in self._engines().items():
            for family, value in (
                (kv, stats.kv_cache_usage), (running, stats.running), (waiting, stats.waiting),
                (start, stats.start_seconds),
            ):
                if value is not None:
                    family.add_metric([base], float(value))
        yield from (kv, running, waiting, start)
        counters: dict[str, Any] = dict(self._cache())
        for key, help_text in (
            ("hits", "Market-data cache hits."),
            ("misses", "Market-data cache misses."),
            (
                "stale_serves",
                "Answers served stale from the cache: expired, while refreshing or after a "
                "provider failure.",
            ),
        ):
            if key in counters:
                counter = CounterMetricFamily(f"forecast_provider_cache_{key}", help_text)
                counter.add_metric([], float(counters[key]))
                yield counter
