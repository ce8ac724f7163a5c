"""An on-disk SQLite cache in front of any :class:`~forecast.providers.base.MarketData`.

Fresh entries are served without calling the live source. When the live source fails with a
:class:`~forecast.errors.ProviderError` (rate limit, auth, network), the last stored value is
served even if expired, marked ``stale=True`` with the error text, so a forecast degrades
instead of failing. ``UnknownTickerError`` and ``NoDataError`` are answers, not failures:
they pass through and are never cached.

:meth:`CachedMarketData.cache_first` gives a view for callers that must not wait on the live
source (the service): an expired entry is served stale at once and refreshed in the
background (stale-while-revalidate), and a key never stored either raises :class:`CacheMiss`
or is fetched, as the caller chooses.

Values are stored as JSON (DataFrames column-wise with their dtypes, pydantic models through
their own JSON), which round-trips floats exactly and keeps executable payloads (pickle) out of
a file on disk.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from pydantic import TypeAdapter

from forecast.errors import ProviderError
from forecast.providers.base import (
    FinancialsProvider,
    MarketData,
    NewsProvider,
    PriceProvider,
    ProfileProvider,
)
from forecast.types import BasicFinancials, CompanyProfile, Fetched, NewsItem

logger = logging.getLogger(__name__)

V = TypeVar("V")
Clock = Callable[[], dt.datetime]
Key = tuple[str, str, str, str]  # (kind, ticker, start, end)
Refresh = Callable[[Callable[[], None]], object]  # runs a refresh job in the background

REFRESHING = "expired; refreshing in the background"


class CacheMiss(LookupError):
    """Nothing stored for a key: only the live source can answer it."""

_SECRET_PARAM = re.compile(r"(?i)\b(token|api_?key|apikey)=([^&\s'\"]+)")


def redact_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` and any ``token=…``/``apikey=…`` value masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _SECRET_PARAM.sub(r"\1=***", text)


def _symbol(ticker: str) -> str:
    return ticker.strip().upper()


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- codecs ---------------------------------------------------------------------------------


def dump_frame(frame: pd.DataFrame) -> str:
    """A DataFrame with a DatetimeIndex as JSON; :func:`load_frame` restores it exactly."""
    index = pd.DatetimeIndex(frame.index)
    return json.dumps(
        {
            "index": [ts.isoformat() for ts in index],
            "index_name": index.name,
            "index_unit": index.unit,
            "columns": [str(c) for c in frame.columns],
            "dtypes": [str(t) for t in frame.dtypes],
            "data": [frame[c].tolist() for c in frame.columns],
        }
    )


def load_frame(text: str) -> pd.DataFrame:
    raw = json.loads(text)
    index = pd.DatetimeIndex(pd.to_datetime(raw["index"]), name=raw["index_name"])
    index = index.as_unit(raw["index_unit"])
    columns = {
        name: pd.Series(values, index=index, dtype=dtype)
        for name, dtype, values in zip(raw["columns"], raw["dtypes"], raw["data"], strict=True)
    }
    return pd.DataFrame(columns, index=index)


@dataclass(frozen=True)
class _Codec:
    dump: Callable[[Any], str]
    load: Callable[[str], Any]


def _pydantic_codec(kind: Any) -> _Codec:
    adapter: TypeAdapter[Any] = TypeAdapter(kind)
    return _Codec(
        dump=lambda value: adapter.dump_json(value).decode("utf-8"),
        load=adapter.validate_json,
    )


_CODECS: dict[str, _Codec] = {
    "prices": _Codec(dump=dump_frame, load=load_frame),
    "news": _pydantic_codec(list[NewsItem]),
    "profile": _pydantic_codec(CompanyProfile),
    "financials": _pydantic_codec(list[BasicFinancials]),
}


# -- storage --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheEntry:
    payload: str
    source: str
    stored_at: dt.datetime


class SqliteStore:
    """Rows keyed by (kind, ticker, start, end) in one SQLite file in WAL mode."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS entries ("
            " kind TEXT NOT NULL, ticker TEXT NOT NULL, start TEXT NOT NULL, end TEXT NOT NULL,"
            " payload TEXT NOT NULL, source TEXT NOT NULL, stored_at TEXT NOT NULL,"
            " PRIMARY KEY (kind, ticker, start, end))"
        )

    def get(self, key: tuple[str, str, str, str]) -> CacheEntry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT payload, source, stored_at FROM entries"
                " WHERE kind = ? AND ticker = ? AND start = ? AND end = ?",
                key,
            ).fetchone()
        if row is None:
            return None
        return CacheEntry(row[0], row[1], dt.datetime.fromisoformat(row[2]))

    def put(self, key: tuple[str, str, str, str], entry: CacheEntry) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key, entry.payload, entry.source, entry.stored_at.isoformat()),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


# -- the wrapper ----------------------------------------------------------------------------


class _KeyedReads:
    """The four :class:`MarketData` reads as (cache key, live call) pairs handed to ``_read``."""

    live: MarketData

    def _read(self, key: Key, call: Callable[[], Fetched[V]]) -> Fetched[V]:
        raise NotImplementedError

    def daily_bars(self, ticker: str, start: dt.date, end: dt.date) -> Fetched[pd.DataFrame]:
        key = ("prices", _symbol(ticker), start.isoformat(), end.isoformat())
        return self._read(key, lambda: self.live.prices.daily_bars(ticker, start, end))

    def company_news(self, ticker: str, start: dt.date, end: dt.date) -> Fetched[list[NewsItem]]:
        key = ("news", _symbol(ticker), start.isoformat(), end.isoformat())
        return self._read(key, lambda: self.live.news.company_news(ticker, start, end))

    def profile(self, ticker: str) -> Fetched[CompanyProfile]:
        key = ("profile", _symbol(ticker), "", "")
        return self._read(key, lambda: self.live.profiles.profile(ticker))

    def basic_financials(self, ticker: str) -> Fetched[list[BasicFinancials]]:
        key = ("financials", _symbol(ticker), "", "")
        return self._read(key, lambda: self.live.financials.basic_financials(ticker))


class CachedMarketData(_KeyedReads):
    """``live`` behind a TTL cache with stale-on-error serving.

    ``hits``, ``misses`` and ``stale_serves`` count answers since construction; the service
    exports them as metrics. ``redact`` lists secrets (the API key) to mask in error texts and
    logs, on top of the ``token=…`` masking every message gets.
    """

    prices: PriceProvider
    news: NewsProvider
    profiles: ProfileProvider
    financials: FinancialsProvider

    def __init__(
        self,
        live: MarketData,
        cache_path: Path | str,
        ttl: dt.timedelta,
        clock: Clock = utc_now,
        redact: Iterable[str] = (),
    ) -> None:
        self.live = live
        self.ttl = ttl
        self.clock = clock
        self.store = SqliteStore(cache_path)
        self.hits = 0
        self.misses = 0
        self.stale_serves = 0
        self._secrets = tuple(s for s in redact if s)
        self._counter_lock = threading.Lock()
        self._refreshing: set[Key] = set()  # keys with a background refresh under way
        self.prices = self.news = self.profiles = self.financials = self

    def cache_first(self, refresh: Refresh, *, fetch_missing: bool) -> CacheFirst:
        """A view answering from the store first (see :class:`CacheFirst`)."""
        return CacheFirst(self, refresh, fetch_missing=fetch_missing)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> CachedMarketData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, key: Key, call: Callable[[], Fetched[V]]) -> Fetched[V]:
        return self._fetch(key, call)

    def _fetch(self, key: Key, call: Callable[[], Fetched[V]]) -> Fetched[V]:
        entry = self.store.get(key)
        if entry is not None and self._fresh(entry):
            return self._hit(key, entry)
        with self._counter_lock:
            self.misses += 1
        try:
            fetched = call()
        except ProviderError as exc:
            if entry is None:
                raise
            message = self._redacted(exc)
            logger.warning(
                "serving stale %s for %s (stored %s): %s",
                key[0], key[1], entry.stored_at.isoformat(), message,
            )  # fmt: skip
            return self._stale(key, entry, message)
        self._put(key, fetched)
        return fetched

    def stored(self, key: Key, call: Callable[[], Fetched[V]], refresh: Refresh) -> Fetched[V]:
        """The stored entry without waiting on the live source: fresh as it is, expired
        marked stale while ``call`` refreshes it through ``refresh`` (one refresh per key at a
        time); :class:`CacheMiss` when nothing is stored."""
        entry = self.store.get(key)
        if entry is None:
            raise CacheMiss(f"{key[0]} for {key[1]} is not cached")
        if self._fresh(entry):
            return self._hit(key, entry)
        self._refresh_in_background(key, call, refresh)
        return self._stale(key, entry, REFRESHING)

    def _fresh(self, entry: CacheEntry) -> bool:
        return self.clock() - entry.stored_at < self.ttl

    def _hit(self, key: Key, entry: CacheEntry) -> Fetched[Any]:
        with self._counter_lock:
            self.hits += 1
        value = _CODECS[key[0]].load(entry.payload)
        return Fetched(value, source=entry.source, fetched_at=entry.stored_at)

    def _stale(self, key: Key, entry: CacheEntry, why: str) -> Fetched[Any]:
        with self._counter_lock:
            self.stale_serves += 1
        value = _CODECS[key[0]].load(entry.payload)
        return Fetched(value, entry.source, stale=True, fetched_at=entry.stored_at, error=why)

    def _put(self, key: Key, fetched: Fetched[Any]) -> None:
        payload = _CODECS[key[0]].dump(fetched.value)
        self.store.put(key, CacheEntry(payload, fetched.source, self.clock()))

    def _redacted(self, exc: Exception) -> str:
        return redact_secrets(f"{type(exc).__name__}: {exc}", self._secrets)

    def _refresh_in_background(
        self, key: Key, call: Callable[[], Fetched[Any]], refresh: Refresh
    ) -> None:
        with self._counter_lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)

        def job() -> None:
            try:
                self._put(key, call())
            except Exception as exc:  # the stale entry stays; the next read tries again
                logger.warning("refreshing %s for %s failed: %s", key[0], key[1], self._redacted(exc))
            finally:
                with self._counter_lock:
                    self._refreshing.discard(key)

        try:
            refresh(job)
        except RuntimeError:  # the runner is shut down
            with self._counter_lock:
                self._refreshing.discard(key)


class CacheFirst(_KeyedReads):
    """``cached`` answered from its store first, for callers that must not wait on a slow
    provider: a fresh entry as it is, an expired one stale at once with a refresh handed to
    ``refresh`` (stale-while-revalidate). A key never stored is fetched from the live source
    in the caller's thread with ``fetch_missing``, else raises :class:`CacheMiss`."""

    def __init__(self, cached: CachedMarketData, refresh: Refresh, *, fetch_missing: bool) -> None:
        self.cached = cached
        self.live = cached.live
        self.refresh = refresh
        self.fetch_missing = fetch_missing
        self.prices: PriceProvider = self
        self.news: NewsProvider = self
        self.profiles: ProfileProvider = self
        self.financials: FinancialsProvider = self

    def _read(self, key: Key, call: Callable[[], Fetched[V]]) -> Fetched[V]:
        try:
            return self.cached.stored(key, call, self.refresh)
        except CacheMiss:
            if not self.fetch_missing:
                raise
        return self.cached._fetch(key, call)
