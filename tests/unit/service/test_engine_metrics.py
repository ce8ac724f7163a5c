"""vLLM's ``vllm:*`` metrics of several engines on one ``/metrics``: one family per name, an
``engine`` label per base, the unbounded LoRA info gauge left out, ``forecast_*`` intact."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from service.engine import EngineStats
from service.telemetry import Telemetry


@dataclass(frozen=True)
class Info:
    model_id: str


class MetricsEngine:
    """What the collector reads of a ``VLLMEngine``: its info and its registry, filled the
    way vLLM's logger fills it (``model_name`` the served path, ``engine`` the DP index)."""

    def __init__(self, model_id: str, running: int, tokens: int) -> None:
        self.info = Info(model_id)
        self.metrics_registry = CollectorRegistry(auto_describe=False)
        labels = {"model_name": "/models/tiny", "engine": "0"}
        r = self.metrics_registry
        Gauge("vllm:num_requests_running", "Running.", list(labels), registry=r).labels(
            **labels
        ).set(running)
        Counter("vllm:generation_tokens", "Tokens.", list(labels), registry=r).labels(
            **labels
        ).inc(tokens)
        Histogram("vllm:time_to_first_token_seconds", "TTFT.", list(labels), registry=r).labels(
            **labels
        ).observe(0.2)
        Gauge("vllm:lora_requests_info", "LoRA.", ["running_lora_adapters"], registry=r).labels(
            "fingpt-llama@v1"
        ).set(1)


def scrape(engines: dict[str, object]) -> str:
    telemetry = Telemetry()
    telemetry.watch(lambda: {b: EngineStats(running=1) for b in engines}, lambda: {})
    telemetry.export_engine_metrics(lambda: engines)
    return telemetry.exposition().decode()


def test_each_engine_is_its_own_series_under_one_family() -> None:
    text = scrape({
        "llama": MetricsEngine("meta-llama/Llama-3.1-8B-Instruct", running=2, tokens=10),
        "deepseek": MetricsEngine("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", running=1, tokens=4),
    })
    families = {f.name: f for f in text_string_to_metric_families(text)}
    running = {s.labels["engine"]: (s.labels["model_name"], s.value)
               for s in families["vllm:num_requests_running"].samples}  # fmt: skip
    assert running == {
        "llama": ("meta-llama/Llama-3.1-8B-Instruct", 2.0),
        "deepseek": ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", 1.0),
    }
    tokens = {s.labels["engine"]: s.value for s in families["vllm:generation_tokens"].samples
              if s.name == "vllm:generation_tokens_total"}  # fmt: skip
    assert tokens == {"llama": 10.0, "deepseek": 4.0}
    assert text.count("# TYPE vllm:time_to_first_token_seconds histogram") == 1
    assert "vllm:lora_requests_info" not in text
    assert 'forecast_engine_running_requests{base="llama"} 1.0' in text


def test_engines_without_a_registry_export_nothing_from_vllm() -> None:
    class Plain:
        info = Info("tiny")

    text = scrape({"llama": Plain()})
    assert "vllm:" not in text
    assert "# TYPE forecast_forecasts_total counter" in text
