"""SIGTERM drains: the service process (real uvicorn, the service's own ``Server``) stops
taking new connections, lets every in-flight forecast finish and be logged, then exits 0."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
from reliability_harness import fake_service_process, inflight

IN_FLIGHT = 12


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    results: list[httpx.Response | Exception] = []

    def ask(url: str, i: int) -> None:
        try:
            results.append(httpx.post(f"{url}/v1/forecast", json={"ticker": "KO"},
                                      headers={"X-Client-Key": f"k{i}"}, timeout=120))
        except httpx.HTTPError as exc:
            results.append(exc)

    # ~45 words at 0.1 s each: every request is still generating when SIGTERM arrives.
    with fake_service_process(tmp_path, delay_s=0.1) as (proc, url):
        threads = [threading.Thread(target=ask, args=(url, i)) for i in range(IN_FLIGHT)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while inflight(httpx.get(f"{url}/metrics", timeout=30).text) < IN_FLIGHT:
            assert time.monotonic() < deadline, "requests never got in flight"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        refused = None
        deadline = time.monotonic() + 30
        while refused is None and time.monotonic() < deadline:
            try:  # new connections are refused once the server stopped listening
                httpx.get(f"{url}/healthz", timeout=5)
                time.sleep(0.05)
            except httpx.ConnectError as exc:
                refused = exc
        for t in threads:
            t.join(timeout=120)
        assert proc.wait(timeout=120) == 0
        output = proc.stdout.read() if proc.stdout else ""

    assert refused is not None
    assert [getattr(r, "status_code", r) for r in results] == [200] * IN_FLIGHT
    assert "drained and stopped" in output
    db = sqlite3.connect(tmp_path / "forecasts.sqlite3")
    try:
        assert db.execute("SELECT count(*) FROM forecasts").fetchone() == (IN_FLIGHT,)
    finally:
        db.close()
