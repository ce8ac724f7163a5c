"""~30 s of load with hot-swaps and a re-weight on the real HTTP server over FakeEngines (the
short version of benchmarks/reliability_load.py, which runs the real tiny model).

16 clients, 8 forecasts admitted at once: without a queue the service sheds the rest with
503 + Retry-After and the clients retry after it; with an 8-deep queue nobody is shed. Two hot-swaps (v1 → v2 → v1) and one re-weight happen during
the run. No request may fail; every 503 must carry Retry-After; every answered forecast must
be in the log. (Stickiness is not asserted here: a request shed before a re-weight and retried
after it rightly lands on the new table's arm, and the load generator dates it by its first
try; tests/unit/service/test_service_routing.py proves stickiness.)"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from support.http import serve_http

from clients.loadgen import CountingTransport, LoadConfig, Reweight, Swap, run_load
from forecast.providers.snapshot import SnapshotMarketData
from service.app import create_app
from service.settings import ServiceSettings
from service.testing import FakeEngine, write_stub_adapter

TOKEN = "load-admin-token-31"
DURATION_S = 30.0
LLAMA, DEEPSEEK = "fingpt-llama", "fingpt-deepseek"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("max_queued", [0, 8], ids=["shed", "queue"])
async def test_load_with_hot_swaps_and_a_reweight_loses_nothing(tmp_path: Path, max_queued: int) -> None:
    root = tmp_path / "adapters"
    for name, version, base in ((LLAMA, "v1", "llama"), (LLAMA, "v2", "llama"), (DEEPSEEK, "v1", "deepseek")):
        write_stub_adapter(root, name, version, base)
    settings = ServiceSettings(
        _env_file=None,  # type: ignore[call-arg]
        admin_token=TOKEN, adapter_root=root, db_url=f"sqlite:///{tmp_path / 'forecasts.sqlite3'}",
        preload=[f"{LLAMA}@v1", f"{DEEPSEEK}@v1"], max_new_tokens=64, weeks=1, news_per_week=1,
        max_inflight=8, max_queued=max_queued, retry_after_s=1,
    )
    engines = {"llama": FakeEngine("llama", delay_s=0.002), "deepseek": FakeEngine("deepseek", delay_s=0.002)}
    now = dt.datetime(2024, 1, 5, 12, 0, tzinfo=dt.UTC)
    app = create_app(settings, engines, SnapshotMarketData(), now=lambda: now)
    wire = CountingTransport()
    with serve_http(app) as url:
        cfg = LoadConfig(
            url=url, concurrency=16, duration_s=DURATION_S, tickers=("AAPL", "MSFT", "KO", "JPM", "V"),
            client_keys=100, swaps=(Swap(8, LLAMA, LLAMA, "v2"), Swap(20, LLAMA, LLAMA, "v1")),
            reweights=(Reweight(14, {LLAMA: 0.3, DEEPSEEK: 0.7}),),
            timeout_s=120, retries=100, admin_token=TOKEN,
        )
        summary: dict[str, Any] = await run_load(cfg, transport=wire)
        rows = app.state.service.forecast_log.count()

    totals, events = summary["totals"], summary["events"]
    print(f"load (fake engines, queue {max_queued}): {totals['requests']} requests, {totals['ok']} ok, "
          f"{totals['errors']} failed, wire {dict(wire.statuses)}, {len(events)} events, {rows} logged, "
          f"latency max {totals['latency_s']['max']} s")
    assert totals["errors"] == 0, totals["errors_by_type"]
    assert totals["ok"] == totals["requests"] > 0
    assert [(e["kind"], e["ok"]) for e in events] == [("swap", True), ("reweight", True), ("swap", True)]
    assert {f"{LLAMA}@v1", f"{LLAMA}@v2", f"{DEEPSEEK}@v1"} <= set(summary["per_adapter"])
    assert set(wire.statuses) <= {200, 503}  # 503 only as backpressure
    assert wire.shed_without_retry_after == 0
    if max_queued:  # 8 in flight + 8 queued hold all 16 clients: nobody is shed
        assert wire.statuses[503] == 0
    else:
        assert wire.statuses[503] > 0
    assert wire.statuses[200] == totals["ok"] == rows  # every answered forecast is logged
