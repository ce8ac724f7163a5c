"""One Finnhub rate limit per API key across processes and replicas.

:class:`~forecast.providers.live.TokenBucket` limits one process; N replicas on one key would
make N times the calls the key allows. :class:`SharedTokenBucket` keeps the bucket in a
database every replica reaches, and takes a token in one atomic step there:

- ``sqlite:///path``: a file shared by the processes of one host (``BEGIN IMMEDIATE``
  serializes the read-refill-debit-write; the host's wall clock);
- ``postgresql://...``: a server shared by replicas on any host (one ``INSERT ... ON CONFLICT
  DO UPDATE`` under the row lock; the server's clock, so hosts' clocks may disagree).

The semantics are those of ``TokenBucket``: a caller takes a token, possibly going into debt,
and sleeps (outside any lock or transaction) until its token is due, so callers from every
process are spaced out at the shared rate. The bucket is keyed by a SHA-256 of the API key;
the key itself is never stored.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import psycopg

FINNHUB_FREE_CALLS_PER_MINUTE = 60
Sleep = Callable[[float], None]

_TABLE = "rate_limit_buckets"
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(_TABLE.encode()).digest()[:8], "big", signed=True)


def bucket_id(api_key: str, service: str = "finnhub") -> str:
    """The bucket's name: a hash of the key, so the store never holds the key in clear."""
    return hashlib.sha256(f"{service}\0{api_key}".encode()).hexdigest()


class BucketStore(Protocol):
    def take(self, bucket: str, capacity: float, rate_per_s: float) -> float:
        """Refill ``bucket`` for the time since its last use, take one token (going into debt
        if none is left), atomically; return the tokens left (negative: debt)."""
        ...


class SqliteBucketStore:
    """Buckets in a SQLite file; the processes of one host share it."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_TABLE} "
                "(id TEXT PRIMARY KEY, tokens REAL NOT NULL, updated REAL NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are the explicit BEGIN IMMEDIATE below.
        return sqlite3.connect(self.path, timeout=60, isolation_level=None)

    def take(self, bucket: str, capacity: float, rate_per_s: float) -> float:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")  # the write lock, before the state is read
            now = self.clock()
            row = conn.execute(
                f"SELECT tokens, updated FROM {_TABLE} WHERE id = ?", (bucket,)
            ).fetchone()
            tokens, updated = (capacity, now) if row is None else (float(row[0]), float(row[1]))
            tokens = min(capacity, tokens + max(0.0, now - updated) * rate_per_s) - 1.0
            conn.execute(
                f"INSERT INTO {_TABLE} (id, tokens, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET tokens = excluded.tokens, updated = excluded.updated",
                (bucket, tokens, max(now, updated)),
            )
            conn.execute("COMMIT")
            return tokens
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()


class PostgresBucketStore:
    """Buckets in a PostgreSQL table; replicas on any host share it (psycopg 3)."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        with self._connect() as conn, conn.transaction():
            # CREATE TABLE IF NOT EXISTS races with itself in PostgreSQL (two replicas
            # starting at once: a unique violation in pg_type); the lock makes them take turns.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_TABLE} "
                "(id TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL, "
                "updated DOUBLE PRECISION NOT NULL)"
            )

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg  # only where a Postgres bucket is configured

        return psycopg.connect(self.conninfo, autocommit=True)

    def take(self, bucket: str, capacity: float, rate_per_s: float) -> float:
        # One statement: the row lock of ON CONFLICT serializes concurrent takers.
        query = f"""
            INSERT INTO {_TABLE} AS b (id, tokens, updated)
            VALUES (%(id)s, %(capacity)s - 1, extract(epoch FROM clock_timestamp()))
            ON CONFLICT (id) DO UPDATE SET
                tokens = LEAST(%(capacity)s, b.tokens + GREATEST(0,
                    extract(epoch FROM clock_timestamp()) - b.updated) * %(rate)s) - 1,
                updated = GREATEST(b.updated, extract(epoch FROM clock_timestamp()))
            RETURNING tokens"""
        params = {"id": bucket, "capacity": capacity, "rate": rate_per_s}
        with self._connect() as conn:
            row = conn.execute(query, params).fetchone()
        if row is None:  # pragma: no cover - RETURNING always yields the row
            raise RuntimeError("rate limit bucket update returned no row")
        return float(row[0])


def bucket_store(url: str) -> BucketStore:
    """``sqlite:///path`` or ``postgresql://...`` (a ``+driver`` suffix is accepted)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"rate limit store must be a URL (sqlite:///path, postgresql://...): {url!r}")
    backend = scheme.split("+", 1)[0]
    if backend == "sqlite":
        return SqliteBucketStore(Path(rest[1:] if rest.startswith("/") else rest))
    if backend in ("postgresql", "postgres"):
        return PostgresBucketStore(f"postgresql://{rest}")
    raise ValueError(f"rate limit store: unsupported scheme {scheme!r} (sqlite, postgresql)")


class SharedTokenBucket:
    """A :class:`~forecast.providers.live.TokenBucket` whose state lives in ``store``."""

    def __init__(
        self,
        store: BucketStore,
        api_key: str,
        rate_per_minute: float = FINNHUB_FREE_CALLS_PER_MINUTE,
        burst: int | None = None,
        sleep: Sleep = time.sleep,
    ) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be positive")
        self.store = store
        self.bucket = bucket_id(api_key)
        self.rate = rate_per_minute / 60.0
        self.capacity = float(burst if burst is not None else max(1, int(rate_per_minute)))
        self.sleep = sleep

    def acquire(self) -> float:
        """Take one token from the shared bucket; return the seconds slept waiting for it."""
        tokens = self.store.take(self.bucket, self.capacity, self.rate)
        wait = -tokens / self.rate if tokens < 0 else 0.0
        if wait > 0:
            self.sleep(wait)
        return wait
