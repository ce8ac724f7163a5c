"""Load generator: exact statistics, spec parsing, and short runs against the service app on
FakeEngines (bounded by request count, so nothing depends on how fast this machine is)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from client_harness import ADMIN_TOKEN, FakeService
from typer.testing import CliRunner

from clients.loadgen import LoadConfig, Reweight, Swap, app, run_load
from clients.loadstats import Event, Sample, percentile, stickiness, summarize, swap_effects
from clients.sdk import Client


def test_percentile_matches_linear_interpolation() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 95) == pytest.approx(4.8)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 5.0
    assert percentile([], 50) is None


def _s(start: float, key: str, arm: str | None, ok: bool = True, **kw: object) -> Sample:
    return Sample(start_s=start, latency_s=1.0, ok=ok, ticker="AAPL", client_key=key, arm=arm,
                  **kw)  # type: ignore[arg-type]  # fmt: skip


def test_summary_groups_by_arm_and_adapter_and_counts_errors() -> None:
    samples = [
        _s(0.0, "k1", "a", adapter="x@v1", ttft_s=0.1, ttft_source="sse"),
        _s(1.0, "k1", "a", adapter="x@v2", ttft_s=0.3, ttft_source="sse"),
        _s(2.0, "k2", "b", adapter="y@v1", ttft_s=0.2, ttft_source="sse"),
        _s(3.0, "k3", None, ok=False, error_type="service_unavailable", status=503),
    ]
    out = summarize(samples, [], elapsed_s=2.0, config={"url": "u"}, bucket_s=2.0)
    assert out["totals"]["requests"] == 4 and out["totals"]["ok"] == 3
    assert out["totals"]["samples_per_s"] == 1.5
    assert out["totals"]["errors_by_type"] == {"service_unavailable": 1}
    assert out["totals"]["ttft_s"]["p50"] == 0.2 and out["totals"]["ttft_source"] == "sse"
    assert set(out["per_arm"]) == {"a", "b", "(none)"}
    assert out["per_arm"]["a"]["ok"] == 2
    assert set(out["per_adapter"]) == {"x@v1", "x@v2", "y@v1"}
    assert [row["ok"] for row in out["timeline"]] == [2, 1]
    assert out["stickiness"] == {"keys": 2, "keys_with_multiple_arms": 0, "examples": []}


def test_stickiness_is_judged_between_reweights_only() -> None:
    rw = Event("reweight", "a=1", at_s=5.0, started_s=5.0, duration_s=1.0, ok=True)
    samples = [_s(1.0, "k", "a"), _s(5.5, "k", "b"), _s(7.0, "k", "b"), _s(8.0, "j", "a")]
    assert stickiness(samples, [rw])["keys_with_multiple_arms"] == 0
    assert stickiness(samples, [])["examples"] == ["k"]


def test_swap_effects_time_the_new_version_from_the_admin_calls_return() -> None:
    swap = Event("swap", "a=a@v2", at_s=5.0, started_s=5.0, duration_s=0.5, ok=True,
                 detail={"before": "a@v1", "after": "a@v2"})  # fmt: skip
    samples = [
        Sample(0.0, 2.0, True, "AAPL", "k1", adapter="a@v1", ttft_s=0.1),
        Sample(5.2, 3.0, True, "KO", "k2", adapter="a@v1", ttft_s=0.1),  # old version, in flight
        Sample(5.7, 2.0, True, "KO", "k3", adapter="a@v2", ttft_s=0.2),
        Sample(6.0, 0.5, True, "MSFT", "k4", adapter="a@v2", ttft_s=0.3),
        Sample(6.1, 0.1, False, "MSFT", "k5", error_type="overloaded", status=503),
    ]
    (effect,) = swap_effects(samples, [swap])
    assert effect["version"] == "a@v2"
    assert effect["requests_served_by_new"] == 2
    assert effect["first_request_after_return_s"] == pytest.approx(0.2)
    assert effect["first_token_after_return_s"] == pytest.approx(0.4)  # 5.7 + 0.2 - 5.5
    assert effect["first_answer_after_return_s"] == pytest.approx(1.0)  # 6.0 + 0.5 - 5.5
    assert effect["failed_after_swap_started"] == 1
    assert swap_effects(samples, [Event("swap", "a=a@v3", 5.0, 5.0, 0.5, ok=False)]) == []
    summary = summarize(samples, [swap], 10.0, {}, keep_samples=True)
    assert summary["swap_effects"] == [effect] and len(summary["samples"]) == 5
    assert "samples" not in summarize(samples, [swap], 10.0, {})


def test_specs_parse() -> None:
    assert Swap.parse("60:fingpt-llama@v2") == Swap(60.0, "fingpt-llama", "fingpt-llama", "v2")
    assert Swap.parse("1.5:canary=fingpt-llama@v3") == Swap(1.5, "canary", "fingpt-llama", "v3")
    assert Reweight.parse("120:a=0.3,b=0.7") == Reweight(120.0, {"a": 0.3, "b": 0.7})
    for bad in ("60", "60:fingpt", "x:fingpt@v2"):
        with pytest.raises(ValueError):
            Swap.parse(bad)
    with pytest.raises(ValueError):
        Reweight.parse("120:a")


async def test_streamed_run_with_a_swap_and_a_reweight(fake_service: FakeService) -> None:
    for engine in fake_service.engines.values():
        engine.delay_s = 0.002  # a few ms a word, so requests overlap the admin calls
    cfg = LoadConfig(
        url=fake_service.url,
        concurrency=4,
        duration_s=None,
        requests=48,
        tickers=("AAPL", "MSFT", "KO"),
        client_keys=12,
        stream=True,
        swaps=(Swap.parse("0:fingpt-llama@v2"),),
        reweights=(Reweight.parse("0:fingpt-llama=1,fingpt-deepseek=1"),),
        admin_token=ADMIN_TOKEN,
    )
    out = await run_load(cfg)
    totals = out["totals"]
    assert totals["requests"] == 48 and totals["ok"] == 48 and totals["errors_by_type"] == {}
    assert totals["ttft_source"] == "sse" and totals["ttft_s"]["p50"] is not None
    assert totals["latency_s"]["p50"] <= totals["latency_s"]["p95"] <= totals["latency_s"]["p99"]
    assert set(out["per_arm"]) <= {"fingpt-llama", "fingpt-deepseek"}
    assert [(e["kind"], e["ok"]) for e in out["events"]] == [("swap", True), ("reweight", True)]
    assert out["events"][0]["detail"] == {"before": "fingpt-llama@v1", "after": "fingpt-llama@v2"}
    assert "fingpt-llama@v2" in out["per_adapter"]
    assert out["stickiness"]["keys_with_multiple_arms"] == 0
    assert "admin_token" not in out["config"]
    with Client(fake_service.url, admin_token=ADMIN_TOKEN) as c:
        assert c.list_adapters().aliases["fingpt-llama"] == "fingpt-llama@v2"


def test_cli_writes_json_and_reports_server_ttft(fake_service: FakeService, tmp_path: Path) -> None:
    out = tmp_path / "loadgen.json"
    args = ["--url", fake_service.url, "--concurrency", "2", "--requests", "6",
            "--duration", "600", "--tickers", "AAPL,KO", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "samples/s" in result.output
    body = json.loads(out.read_text())
    assert body["totals"]["ok"] == 6 and body["totals"]["ttft_source"] == "server"
    assert body["config"]["tickers"] == ["AAPL", "KO"]


def test_cli_refuses_swaps_without_a_token(fake_service: FakeService) -> None:
    args = ["--url", fake_service.url, "--requests", "1", "--swap-at", "1:fingpt-llama@v2"]
    result = CliRunner().invoke(app, args, env={"DOW30_ADMIN_TOKEN": ""})
    assert result.exit_code == 2
