"""No acknowledged forecast is lost across a kill -9 of the service, with the forecast log on
SQLite in WAL mode (as shipped) and on a real PostgreSQL server: the service runs as a process
of its own on FakeEngines, clients send forecasts, the process is SIGKILLed while requests are
in flight, and the database, reopened, holds every forecast that was answered 200 (counted
by id)."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from reliability_harness import fake_service_process

TICKERS = ["AAPL", "MSFT", "KO", "JPM", "V", "HD", "CAT", "MMM"]
CLIENTS = 8
KILL_AFTER = 100  # acknowledged forecasts before each kill


ROUNDS = 3  # kill -9, restart on the same database, kill -9 again


def run_until_killed(
    directory: Path, acknowledged: list[str], sent: list[int], db_url: str
) -> None:
    """Start the service, send forecasts from :data:`CLIENTS` clients, SIGKILL it once
    :data:`KILL_AFTER` more were acknowledged, while the clients are still sending."""
    lock = threading.Lock()
    stop = threading.Event()
    start = len(acknowledged)

    def client(i: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            n = 0
            while not stop.is_set():
                body = {"ticker": TICKERS[(i + n) % len(TICKERS)]}
                n += 1
                with lock:
                    sent[0] += 1
                try:
                    r = http.post("/v1/forecast", json=body, headers={"X-Client-Key": f"c{i}"})
                except httpx.HTTPError:
                    return  # the service is gone
                if r.status_code == 200:
                    with lock:
                        acknowledged.append(r.json()["id"])

    (directory / "port").unlink(missing_ok=True)
    with fake_service_process(directory, delay_s=0.002, db_url=db_url) as (proc, url):
        threads = [threading.Thread(target=client, args=(i, url)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while len(acknowledged) - start < KILL_AFTER and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        stop.set()
        for t in threads:
            t.join(timeout=60)


@pytest.fixture
def db_url(any_db_url: str) -> str:
    """SQLite and PostgreSQL in turn (tests/conftest.py)."""
    return any_db_url


def stored_ids(db_url: str, directory: Path) -> set[str]:
    if db_url.startswith("sqlite"):
        db = sqlite3.connect(directory / "forecasts.sqlite3")
        try:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            return {row[0] for row in db.execute("SELECT id FROM forecasts")}
        finally:
            db.close()
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(sa.text("SELECT id FROM forecasts"))}
    finally:
        engine.dispose()


def test_no_acknowledged_forecast_is_lost_across_kill_9(tmp_path: Path, db_url: str) -> None:
    acknowledged: list[str] = []
    sent = [0]
    for _ in range(ROUNDS):
        run_until_killed(tmp_path, acknowledged, sent, db_url)

    stored = stored_ids(db_url, tmp_path)
    lost = set(acknowledged) - stored
    backend = db_url.split(":", 1)[0]
    print(f"durability ({backend}): {ROUNDS} kill -9s, sent {sent[0]}, acknowledged "
          f"{len(acknowledged)}, stored {len(stored)}, lost {len(lost)}")
    assert len(acknowledged) >= ROUNDS * KILL_AFTER
    assert not lost, f"{len(lost)} acknowledged forecasts missing after kill -9"
    assert len(stored) >= len(acknowledged)
