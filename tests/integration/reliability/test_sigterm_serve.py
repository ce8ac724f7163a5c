"""SIGTERM on the shipped serve path: ``service.main.main`` → ``serve`` (the service's own
uvicorn ``Server``) → ``running`` → ``close_engines``, on a real vLLM CPU engine, in a process
of its own. A forecast is held in flight by a gate (``gated_service.py``) while the signal
arrives: new connections are refused, the held forecast is answered and logged once let go,
the engine is closed (its engine-core process gone) and the process exits 0."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import httpx
import psutil
import pytest
from support.http import free_port

from service.settings import EngineSettings

pytestmark = pytest.mark.timeout(900)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
BOUND_S = 600.0  # engine start on a loaded 2-core host: a bound, never a timing claim


def wait_for(
    predicate: Callable[[], bool], what: str, proc: subprocess.Popen[str], output: list[str]
) -> None:
    deadline = time.monotonic() + BOUND_S
    while not predicate():
        if proc.poll() is not None:
            time.sleep(1)  # the reader thread takes the last lines
            tail = "".join(output)[-3000:]
            raise AssertionError(f"service exited ({proc.returncode}) before: {what}\n{tail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {BOUND_S:g} s: {what}")
        time.sleep(0.05)


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=30).status_code == 200
    except httpx.HTTPError:
        return False


def refuses(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=5)
    except httpx.ConnectError:
        return True
    return False


def test_sigterm_drains_the_real_serve_path_and_closes_the_engine(
    engine_spec: EngineSettings, adapter_root: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = tmp_path / "forecasts.sqlite3"
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
        "FORECAST_SERVICE_PORT": str(port),
        "FORECAST_SERVICE_ADMIN_TOKEN": "sigterm-admin-token",
        "FORECAST_SERVICE_ADAPTER_ROOT": str(adapter_root),
        "FORECAST_SERVICE_DB_URL": f"sqlite:///{db}",
        # the longest 1-week prompt of the snapshot is ~2.2k tokens: preflight refuses 2,048
        "FORECAST_SERVICE_ENGINES": json.dumps([engine_spec.model_dump(mode="json") | {"max_model_len": 4096}]),
        "FORECAST_SERVICE_PRELOAD": json.dumps(["fingpt-llama@v1"]),
        "FORECAST_SERVICE_MAX_NEW_TOKENS": "8",
        "FORECAST_SERVICE_WEEKS": "1", "FORECAST_SERVICE_NEWS_PER_WEEK": "1",
        "FORECAST_SERVICE_WITH_FINANCIALS": "false",
        "FORECAST_SERVICE_STRUCTURED_ANSWERS": "false", "FORECAST_SERVICE_PROBE_UNPARSED": "false",
        "FORECAST_SERVICE_READY_TIMEOUT_S": "600",
        "FORECAST_SERVICE_ENGINE_STALL_S": "3600",  # the gate holds a generation on purpose
        "FORECAST_DATA_SOURCE": "snapshot",
    }
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "gated_service.py"), str(gate)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
    reader.start()
    result: list[httpx.Response | Exception] = []

    def ask() -> None:
        try:
            result.append(httpx.post(f"{url}/v1/forecast", timeout=BOUND_S,
                                     json={"ticker": "KO", "adapter": "fingpt-llama"}))
        except httpx.HTTPError as exc:
            result.append(exc)

    try:
        wait_for(lambda: answers(url), "the service answers /readyz 200", proc, output)
        cores = psutil.Process(proc.pid).children(recursive=True)
        assert cores, "no engine-core process under the service"
        asker = threading.Thread(target=ask)
        asker.start()
        wait_for((gate / "held").exists, "the forecast held in flight on the engine", proc, output)
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: refuses(url), "new connections refused after SIGTERM", proc, output)
        assert not result  # still held: the drain waits for it
        (gate / "release").touch()
        asker.join(timeout=BOUND_S)
        code = proc.wait(timeout=BOUND_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    reader.join(timeout=60)
    text = "".join(output)

    assert code == 0, text[-3000:]
    [answer] = result
    assert isinstance(answer, httpx.Response), answer
    assert answer.status_code == 200, answer.text
    assert answer.json()["adapter"] == "fingpt-llama@v1"
    assert "closed the llama engine" in text, text[-3000:]
    _, alive = psutil.wait_procs(cores, timeout=60)
    assert not alive, alive
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM forecasts").fetchone() == (1,)
