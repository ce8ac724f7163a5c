"""Engine faults on the real vLLM CPU engine (tiny model).

* The engine-core process is SIGKILLed under a running service: readiness turns red,
  forecasts get 503 with Retry-After, the supervisor starts a new engine and reloads the
  adapter under a fresh LoRA id, readiness turns green, and the adapter answers exactly as
  before (greedy decoding: same text).
* The service process is SIGKILLed: its engine core does not outlive it (lifeline).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import pytest

from forecast.providers.snapshot import SnapshotMarketData
from service.app import create_app
from service.engine import EngineClient, VLLMEngine
from service.settings import EngineSettings, ServiceSettings
from service.testing import error_of

pytestmark = pytest.mark.timeout(1800)

REPO = Path(__file__).resolve().parents[3]
NOW = dt.datetime(2024, 1, 5, 12, 0, tzinfo=dt.UTC)
BODY = {"ticker": "KO", "adapter": "fingpt-llama"}


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def poll(client: httpx.AsyncClient, path: str, status: int, timeout_s: float) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        r = await client.get(path)
        if r.status_code == status or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.2)


async def test_killed_engine_core_restarts_with_its_adapter(
    engine_spec: EngineSettings, adapter_root: Path, tmp_path: Path
) -> None:
    starts: list[EngineClient] = []

    async def start(base: str) -> EngineClient:
        engine = await asyncio.to_thread(VLLMEngine.start, engine_spec)
        starts.append(engine)
        return engine

    first = await start("llama")
    settings = ServiceSettings(
        _env_file=None,  # type: ignore[call-arg]
        admin_token="t", adapter_root=adapter_root, db_url=f"sqlite:///{tmp_path / 'f.sqlite3'}",
        preload=["fingpt-llama@v1"], max_new_tokens=8, weeks=1, news_per_week=1,
        with_financials=False, ready_probe_s=3600, ready_timeout_s=600, engine_check_s=0.5,
        restart_backoff_s=1.0,
    )
    app = create_app(settings, {"llama": first}, SnapshotMarketData(), now=lambda: NOW, restart=start)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://svc", timeout=600) as client:
                registry = app.state.service.registry
                before = await client.post("/v1/forecast", json=BODY)
                assert (await client.get("/readyz")).status_code == 200
                old_id = registry.resolve("fingpt-llama").lora.lora_id
                [core] = first.core_pids()  # type: ignore[attr-defined]

                os.kill(core, signal.SIGKILL)
                red = await poll(client, "/readyz", 503, timeout_s=120)
                during = await client.post("/v1/forecast", json=BODY)
                green = await poll(client, "/readyz", 200, timeout_s=900)
                after = await client.post("/v1/forecast", json=BODY)
                new_id = registry.resolve("fingpt-llama").lora.lora_id
                new_cores = starts[-1].core_pids()  # type: ignore[attr-defined]
                metrics = (await client.get("/metrics")).text
    finally:
        for engine in starts:
            await engine.aclose()

    assert before.status_code == 200, before.text
    assert red.status_code == 503 and red.headers["Retry-After"]
    assert during.status_code == 503 and during.headers["Retry-After"]
    assert error_of(during)["code"] in ("engine_restarting", "engine_unavailable")
    assert green.status_code == 200, green.text
    assert len(starts) == 2 and gone(core) and core not in new_cores
    assert after.status_code == 200, after.text
    assert after.json()["adapter"] == "fingpt-llama@v1" and new_id > old_id
    assert after.json()["raw_text"] == before.json()["raw_text"]  # same adapter, greedy
    assert 'forecast_engine_restarts_total{base="llama",result="ok"} 1.0' in metrics
    deadline = time.monotonic() + 60  # the supervisor closed the engine it started
    while not all(gone(p) for p in new_cores) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert all(gone(p) for p in new_cores)


SERVICE_STAND_IN = textwrap.dedent("""
    import asyncio, json, sys, time
    from service.engine import VLLMEngine
    from service.settings import EngineSettings

    async def main() -> None:
        engine = VLLMEngine.start(EngineSettings.model_validate_json(sys.argv[1]))
        print("CORES", json.dumps(engine.core_pids()), flush=True)
        await asyncio.sleep(3600)

    if __name__ == "__main__":
        asyncio.run(main())
""")


def test_engine_core_dies_with_a_killed_service(engine_spec: EngineSettings, tmp_path: Path) -> None:
    script = tmp_path / "service_stand_in.py"
    script.write_text(SERVICE_STAND_IN)
    proc = subprocess.Popen(
        [sys.executable, str(script), engine_spec.model_dump_json()], cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = ""
        while not line.startswith("CORES "):  # vLLM logs to stdout too
            line = proc.stdout.readline()
            assert line, "the stand-in exited before its engine started"
        cores = [int(p) for p in json.loads(line.removeprefix("CORES "))]
        family = [*cores, *(c.pid for p in cores for c in psutil.Process(p).children(recursive=True))]
        assert not any(gone(p) for p in family)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 60
        while not all(gone(p) for p in family) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [p for p in family if not gone(p)]
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert not survivors, f"engine processes outlived the killed service: {survivors}"
