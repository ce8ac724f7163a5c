"""A real Prometheus server scrapes the service and answers a per-adapter samples/s query;
vLLM's own ``vllm:*`` metrics of both engines come on the same ``/metrics``.

The service runs on a real socket (uvicorn) over the real engines; Prometheus (the Debian
binary) runs the shipped ``deploy/prometheus/prometheus.yml`` (only its scrape targets moved
to this test's addresses) and the shipped ``rules.yml``. The test waits, with a generous
deadline that is never asserted on, until Prometheus's HTTP API returns the shipped recording
rule's samples/s above zero for each adapter, and vLLM's generated tokens for each engine.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.http import free_port

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(900)]

DEADLINE_S = 300.0  # how long to wait for scrapes on a loaded machine; not a timing claim
ADAPTERS = ("fingpt-llama", "fingpt-deepseek")
PROM_DIR = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"
RULE = "adapter:forecast_samples:rate1m"  # a recording rule of the shipped rules.yml
ENGINES = {"llama", "deepseek"}
DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "dashboards" / "forecast.json"


def shipped_config(service: str, prometheus: str) -> dict[str, Any]:
    """``deploy/prometheus/prometheus.yml`` as shipped, with only the scrape targets moved
    to this test's addresses (compose's ``forecast:8000`` → the service's socket, and
    Prometheus's own ``localhost:9090`` → its port here)."""
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    moved = {"forecast": service, "prometheus": prometheus}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [moved[job["job_name"]]]
    return config


@pytest.fixture
def prometheus(prometheus_bin: str, service_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    config = shipped_config(service_url.removeprefix("http://"), f"127.0.0.1:{port}")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    for rules in config["rule_files"]:  # the shipped rules, unchanged, where the config names them
        shutil.copy(PROM_DIR / rules, tmp_path / rules)
    check = subprocess.run(
        [prometheus_bin, "--version"], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def query(prom: httpx.AsyncClient, expr: str, key: str = "adapter") -> dict[str, float]:
    """``{adapter: value}`` (or of another ``key`` label) of an instant query (empty while
    Prometheus is not ready)."""
    try:
        r = await prom.get("/api/v1/query", params={"query": expr})
    except httpx.TransportError:
        return {}
    if r.status_code != 200:
        return {}
    out = {}
    for sample in r.json()["data"]["result"]:
        out[sample["metric"].get(key, sample["metric"].get("job", ""))] = float(sample["value"][1])
    return out


async def wait_for(
    prom: httpx.AsyncClient, expr: str, ok: Any, key: str = "adapter"
) -> dict[str, float]:
    deadline = time.monotonic() + DEADLINE_S
    last: dict[str, float] = {}
    while time.monotonic() < deadline:
        last = await query(prom, expr, key)
        if ok(last):
            return last
        await asyncio.sleep(1)
    raise AssertionError(f"Prometheus never satisfied {expr!r}; last answer {last}")


async def test_prometheus_scrapes_per_adapter_samples_per_second(
    service_url: str, prometheus: str
) -> None:
    """Prometheus on the shipped configuration and rules (15 s scrapes and evaluations):
    the service's series arrive with the shipped target labels, the shipped recording rule
    gives each adapter's samples/s, and every shipped rule evaluates without error."""
    async with (
        httpx.AsyncClient(base_url=prometheus, timeout=30) as prom,
        httpx.AsyncClient(base_url=service_url, timeout=600) as svc,
    ):
        await wait_for(prom, 'up{job="forecast",deployment="compose"}',
                       lambda v: v.get("forecast") == 1.0)

        async def round_of_forecasts() -> None:
            replies = await asyncio.gather(*(
                svc.post("/v1/forecast", json={"ticker": "KO", "adapter": a}) for a in ADAPTERS
            ))
            assert [r.status_code for r in replies] == [200, 200]

        # Two rounds with a scrape between them: a counter's rate needs two samples.
        await round_of_forecasts()
        await wait_for(prom, "forecast_forecasts_total", lambda v: set(ADAPTERS) <= set(v))
        await round_of_forecasts()
        expr = "sum by (adapter) (rate(forecast_forecasts_total[1m]))"
        rates = await wait_for(prom, expr, lambda v: all(v.get(a, 0) > 0 for a in ADAPTERS))
        recorded = await wait_for(prom, RULE, lambda v: all(v.get(a, 0) > 0 for a in ADAPTERS))
        ttft = await query(prom, "sum by (adapter) (forecast_time_to_first_token_seconds_count)")
        tokens = await wait_for(
            prom, "sum by (engine) (vllm:generation_tokens_total)",
            lambda v: all(v.get(e, 0) > 0 for e in ENGINES), key="engine",
        )
        groups = (await prom.get("/api/v1/rules")).json()["data"]["groups"]
    shipped = yaml.safe_load((PROM_DIR / "rules.yml").read_text())
    assert all(rates[a] > 0 and recorded[a] > 0 for a in ADAPTERS)
    assert all(ttft.get(a, 0) >= 2 for a in ADAPTERS)
    assert set(tokens) == ENGINES
    loaded = {g["name"]: [r["name"] for r in g["rules"]] for g in groups}
    assert loaded == {
        g["name"]: [r.get("record") or r["alert"] for r in g["rules"]] for g in shipped["groups"]
    }
    unhealthy = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"]
                 if r["health"] != "ok"]
    assert not unhealthy


async def test_vllm_engine_metrics_per_engine_next_to_forecast_metrics(
    client: httpx.AsyncClient,
) -> None:
    replies = await asyncio.gather(*(
        client.post("/v1/forecast", json={"ticker": "KO", "adapter": a}) for a in ADAPTERS
    ))
    assert [r.status_code for r in replies] == [200, 200]
    text = (await client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def by_engine(family: str, sample: str) -> dict[str, float]:
        return {s.labels["engine"]: s.value for s in families[family].samples if s.name == sample}

    # Scheduler gauges come with every engine step, counters and histograms with its outputs:
    # the steps before a forecast's last token were recorded before its answer came back.
    assert set(by_engine("vllm:num_requests_running", "vllm:num_requests_running")) == ENGINES
    assert set(by_engine("vllm:kv_cache_usage_perc", "vllm:kv_cache_usage_perc")) == ENGINES
    tokens = by_engine("vllm:generation_tokens", "vllm:generation_tokens_total")
    assert set(tokens) == ENGINES and all(v > 0 for v in tokens.values())
    ttft = by_engine("vllm:time_to_first_token_seconds", "vllm:time_to_first_token_seconds_count")
    assert set(ttft) == ENGINES and all(v > 0 for v in ttft.values())
    # One family per name however many engines; the product's own metrics as before.
    types = re.findall(r"^# TYPE (vllm:\S+) ", text, flags=re.M)
    assert types and len(types) == len(set(types))
    forecasts = {s.labels["adapter"] for s in families["forecast_forecasts"].samples}
    assert set(ADAPTERS) <= forecasts
    # Every vllm: series the Grafana dashboard queries is one the service exports.
    board = json.dumps(json.loads(DASHBOARD.read_text()))
    wanted = set(re.findall(r"vllm:[a-z_]+", board))
    exported = {s.name for f in families.values() for s in f.samples}
    assert wanted and wanted <= exported, wanted - exported
