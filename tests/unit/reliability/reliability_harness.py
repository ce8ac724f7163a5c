"""Helpers of the reliability tests (a module of its own: every conftest is named conftest).
``serve_http`` (real loopback HTTP) comes from tests/support/http.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


async def wait_until(predicate: Callable[[], bool], *, timeout_s: float = 20.0) -> None:
    """Poll ``predicate`` until true; fail after ``timeout_s`` (a bound, not a timing claim)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def logged_forecasts(client: Any) -> int:
    """Rows in the forecast log of the app behind an in-process ``client``."""
    return int(client.app.state.service.forecast_log.count())


HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


@contextmanager
def fake_service_process(
    directory: Path, *, delay_s: float = 0.0, max_inflight: int = 64, db_url: str | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``fake_service.py`` in a process of its own; yields it and its base URL once healthy.
    Killed at the end if the test left it running. ``db_url``: the forecast log (default a
    SQLite file in ``directory``)."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fake_service.py"), "--dir", str(directory),
         "--delay-s", str(delay_s), "--max-inflight", str(max_inflight),
         *(["--db-url", db_url] if db_url else [])],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        port_file = directory / "port"
        deadline = time.monotonic() + 120
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read() if proc.stdout and proc.poll() is not None else ""
                raise RuntimeError(f"fake service did not start: {out[-2000:]}")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text()}"
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


def inflight(metrics: str) -> float:
    """Sum of ``forecast_inflight_requests`` over adapter versions in a /metrics text."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("forecast_inflight_requests{")
    )
