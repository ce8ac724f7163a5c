"""One Finnhub rate limit per key across processes: two processes (multiprocessing, spawn)
take tokens from one bucket in a SQLite file or a PostgreSQL table, and together they are
granted no more than the limit allows, counted over the grants' due times; the same two
processes with a bucket each (the per-process default) are granted twice the burst at once.
The key is stored only as a hash."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forecast.providers.ratelimit import SharedTokenBucket, bucket_id, bucket_store

KEY = "sk-finnhub-test-0123456789abcdef"
BURST = 5
PER_MINUTE = 60.0  # one token a second after the burst
TAKES = 8  # per process


def take_tokens(store_url: str | None, start: Any, results: Any) -> None:
    """In a child process: once both children are ready, take :data:`TAKES` tokens without
    sleeping and report when each is due (wall clock + the wait the bucket asked for).
    Module imports stay light: each spawned child imports this module."""
    bucket: Any
    if store_url:
        bucket = SharedTokenBucket(bucket_store(store_url), KEY, PER_MINUTE, burst=BURST,
                                   sleep=lambda s: None)
    else:
        from forecast.providers.live import TokenBucket

        bucket = TokenBucket(PER_MINUTE, burst=BURST, clock=time.time, sleep=lambda s: None)
    start.wait(timeout=120)
    due = []
    for _ in range(TAKES):
        wait = bucket.acquire()
        due.append(time.time() + wait)
    results.put(due)


def grants_in_two_processes(store_url: str | None) -> list[float]:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=take_tokens, args=(store_url, start, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    due = [t for _ in procs for t in results.get(timeout=180)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return sorted(due)


def excess(due: list[float]) -> float:
    """How many grants beyond the limit were due at the worst moment: the k-th grant (from 1)
    due ``t`` seconds after the first may be at most ``BURST + rate * t``."""
    rate = PER_MINUTE / 60.0
    return max(k - (BURST + rate * (t - due[0])) for k, t in enumerate(due, start=1))


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ratelimit.sqlite3'}"
        return
    with request.getfixturevalue("postgres").database() as url:
        yield url


def test_two_processes_share_one_limit(store_url: str) -> None:
    due = grants_in_two_processes(store_url)
    assert len(due) == 2 * TAKES  # every call is granted, in turn
    assert excess(due) <= 0.2  # never more grants due than burst + rate x elapsed
    # Each process alone would have been granted its burst at once; together they got one.
    assert sum(t - due[0] < 0.5 for t in due) == BURST


def test_a_bucket_per_process_lets_each_take_the_whole_limit() -> None:
    due = grants_in_two_processes(None)
    assert sum(t - due[0] < 0.5 for t in due) == 2 * BURST  # the problem the shared one fixes
    assert excess(due) >= BURST - 1


def test_the_key_is_stored_only_as_a_hash(tmp_path: Path) -> None:
    path = tmp_path / "ratelimit.sqlite3"
    SharedTokenBucket(bucket_store(f"sqlite:///{path}"), KEY, sleep=lambda s: None).acquire()
    stored = path.read_bytes()
    assert KEY.encode() not in stored and bucket_id(KEY).encode() in stored


def test_settings_pick_the_shared_bucket_only_when_configured(tmp_path: Path) -> None:
    from forecast.providers.live import TokenBucket
    from forecast.settings import DataSettings, finnhub_limiter

    url = f"sqlite:///{tmp_path / 'rl.sqlite3'}"
    shared = DataSettings(_env_file=None, finnhub_rate_limit_url=url, finnhub_calls_per_minute=30)  # type: ignore[call-arg]
    limiter = finnhub_limiter(shared, KEY)
    assert isinstance(limiter, SharedTokenBucket) and limiter.rate == 0.5
    assert isinstance(finnhub_limiter(DataSettings(_env_file=None), KEY), TokenBucket)  # type: ignore[call-arg]
