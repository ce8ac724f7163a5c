"""Live providers over the real client libraries: yfinance for prices, finnhub-python for the rest.

Both clients are injectable (a ``finnhub.Client``; a requests/curl_cffi session for yfinance),
so tests drive the real parsing code with recorded HTTP responses. Time is injected too: the
rate limiter's clock and the sleep used for backoff.

Errors are mapped onto :mod:`forecast.errors`; every message passes through
:func:`~forecast.providers.cache.redact_secrets` and is raised ``from None``, because the
libraries' own exceptions carry request URLs with the API key in their query string. For
the same reason the key is masked in urllib3's log records (it logs each request URL at
DEBUG): :class:`RedactSecretsFilter` is installed when a Finnhub provider is built.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import finnhub
import pandas as pd
import requests
import yfinance as yf
from yfinance.exceptions import (
    YFException,
    YFPricesMissingError,
    YFRateLimitError,
    YFTzMissingError,
)

from forecast.errors import (
    NoDataError,
    ProviderAuthError,
    ProviderError,
    RateLimitedError,
    UnknownTickerError,
)
from forecast.providers.base import (
    PRICE_COLUMNS,
    FinancialsProvider,
    NewsProvider,
    PriceProvider,
    ProfileProvider,
)
from forecast.providers.cache import redact_secrets
from forecast.providers.ratelimit import FINNHUB_FREE_CALLS_PER_MINUTE
from forecast.providers.snapshot import profile_from_finnhub
from forecast.types import BasicFinancials, CompanyProfile, Fetched, NewsItem

R = TypeVar("R")
Sleep = Callable[[float], None]

# urllib3's loggers that write request URLs: connection pool (each request line at DEBUG),
# retries (the URL retried) and pool manager (redirects). Filters on a logger apply to its
# own records only, not to its children's, so each gets the filter.
URL_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager")


class RedactSecretsFilter(logging.Filter):
    """Masks ``secrets`` and any ``token=``/``apikey=`` value in a record's message."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_secrets(message, self.secrets)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_in_logs(secrets: tuple[str, ...], loggers: tuple[str, ...] = URL_LOGGERS) -> None:
    """Install a :class:`RedactSecretsFilter` for ``secrets`` on ``loggers`` (once per key)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(
            isinstance(f, RedactSecretsFilter) and f.secrets == secrets for f in logger.filters
        ):
            logger.addFilter(RedactSecretsFilter(secrets))


class RateLimiter(Protocol):
    def acquire(self) -> float:
        """Take one token, waiting for it if need be; return the seconds waited."""
        ...


class TokenBucket:
    """Client-side rate limiter of one process: ``rate_per_minute`` calls, bursts up to
    ``burst`` (:class:`~forecast.providers.ratelimit.SharedTokenBucket` shares one across
    processes and replicas).

    A caller takes a token, possibly going into debt, and sleeps outside the lock until its
    token is due, so concurrent callers are spaced out instead of serialized on the lock.
    """

    def __init__(
        self,
        rate_per_minute: float = FINNHUB_FREE_CALLS_PER_MINUTE,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be positive")
        self.rate = rate_per_minute / 60.0
        self.capacity = float(burst if burst is not None else max(1, int(rate_per_minute)))
        self.clock = clock
        self.sleep = sleep
        self._tokens = self.capacity
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token; return the seconds slept waiting for it."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self.sleep(wait)
        return wait


@dataclass(frozen=True)
class Backoff:
    """Retry policy for rate limits and transient failures: ``base * 2**attempt`` seconds."""

    retries: int = 3
    base_seconds: float = 1.0
    max_seconds: float = 30.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_seconds, self.base_seconds * 2**attempt))


class _Retryable(Exception):
    """Internal: an attempt failed in a way worth retrying."""

    def __init__(self, message: str, rate_limited: bool) -> None:
        super().__init__(message)
        self.rate_limited = rate_limited


def _with_retries(call: Callable[[], R], backoff: Backoff, sleep: Sleep, what: str) -> R:
    for attempt in range(backoff.retries + 1):
        try:
            return call()
        except _Retryable as exc:
            if attempt == backoff.retries:
                error = RateLimitedError if exc.rate_limited else ProviderError
                raise error(f"{what}: {exc} (after {attempt + 1} attempts)") from None
            sleep(backoff.delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


# -- Yahoo Finance ---------------------------------------------------------------------------


class YFinancePriceProvider:
    """Daily bars from Yahoo Finance through ``yfinance.Ticker.history``.

    Constructing one sets ``yf.config.debug.hide_exceptions = False`` (process-wide; the
    setting yfinance documents) so failures arrive as exceptions rather than log lines and
    empty frames.
    """

    source = "yfinance"

    def __init__(
        self,
        session: Any = None,
        backoff: Backoff | None = None,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.session = session
        self.backoff = backoff or Backoff()
        self.sleep = sleep
        yf.config.debug.hide_exceptions = False

    def daily_bars(self, ticker: str, start: dt.date, end: dt.date) -> Fetched[pd.DataFrame]:
        """Bars for ``start <= day < end``, naive DatetimeIndex of exchange-local days."""
        symbol = ticker.strip().upper()
        what = f"Yahoo Finance daily bars for {symbol}"
        raw = _with_retries(
            lambda: self._history(symbol, start, end), self.backoff, self.sleep, what
        )
        bars = _normalize_bars(raw)
        bars = bars[(bars.index >= pd.Timestamp(start)) & (bars.index < pd.Timestamp(end))]
        if bars.empty:
            raise NoDataError(f"Yahoo Finance has no {symbol} bars for {start} <= day < {end}")
        return Fetched(bars, source=self.source)

    def _history(self, symbol: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        try:
            frame = yf.Ticker(symbol, session=self.session).history(
                start=start.isoformat(),
                end=end.isoformat(),
                interval="1d",
                auto_adjust=False,
                actions=True,
            )
        except YFRateLimitError:
            raise _Retryable("HTTP 429 Too Many Requests", rate_limited=True) from None
        except YFTzMissingError:
            raise UnknownTickerError(f"Yahoo Finance does not know {symbol!r}") from None
        except YFPricesMissingError as exc:
            reason = exc.yahoo_reason or ""
            if "symbol may be delisted" in reason:
                raise UnknownTickerError(f"Yahoo Finance: {symbol!r}: {reason}") from None
            raise NoDataError(f"Yahoo Finance has no {symbol} bars for {start} .. {end}") from None
        except YFException as exc:
            raise ProviderError(f"Yahoo Finance failed for {symbol}: {exc}") from None
        except OSError as exc:  # requests' and curl_cffi's exceptions both derive from OSError
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status == 404:
                raise UnknownTickerError(f"Yahoo Finance does not know {symbol!r}") from None
            if status == 429:
                raise _Retryable("HTTP 429 Too Many Requests", rate_limited=True) from None
            message = redact_secrets(f"{type(exc).__name__}: {exc}")
            raise _Retryable(message, rate_limited=False) from None
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            detail = redact_secrets(f"{type(exc).__name__}: {exc}")
            raise ProviderError(
                f"Yahoo Finance answer for {symbol} is unreadable: {detail}"
            ) from None
        if not isinstance(frame, pd.DataFrame):
            raise ProviderError(f"Yahoo Finance returned {type(frame).__name__} for {symbol}")
        return frame


def _normalize_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """yfinance's frame (tz-aware exchange-midnight index, action columns) as PRICE_COLUMNS."""
    if frame.empty:
        return pd.DataFrame(columns=list(PRICE_COLUMNS), index=pd.DatetimeIndex([], name="Date"))
    index = pd.DatetimeIndex(frame.index)
    if index.tz is not None:
        index = index.tz_localize(None)
    bars = frame.loc[:, list(PRICE_COLUMNS)].copy()
    bars.index = pd.DatetimeIndex(index.normalize().as_unit("ns"), name="Date")
    bars = bars.astype({c: "float64" for c in PRICE_COLUMNS if c != "Volume"})
    bars["Volume"] = bars["Volume"].astype("int64")
    return bars.sort_index()


# -- Finnhub ---------------------------------------------------------------------------------


class FinnhubProvider:
    """Company news, profile and quarterly basic financials from the Finnhub REST API."""

    source = "finnhub"

    def __init__(
        self,
        client: Any,
        limiter: RateLimiter | None = None,
        backoff: Backoff | None = None,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.client = client
        self.limiter = limiter if limiter is not None else TokenBucket(sleep=sleep)
        self.backoff = backoff or Backoff()
        self.sleep = sleep
        self._secrets = tuple(s for s in (getattr(client, "api_key", None),) if s)
        redact_in_logs(self._secrets)  # urllib3 logs request URLs, key included, at DEBUG

    @classmethod
    def from_api_key(cls, api_key: str, **kwargs: Any) -> FinnhubProvider:
        return cls(finnhub.Client(api_key=api_key), **kwargs)

    def company_news(self, ticker: str, start: dt.date, end: dt.date) -> Fetched[list[NewsItem]]:
        """News on UTC days ``start..end`` inclusive, oldest first (possibly empty)."""
        symbol = ticker.strip().upper()
        raw = self._call(
            "company news", symbol,
            lambda: self.client.company_news(symbol, _from=start.isoformat(), to=end.isoformat()),
        )  # fmt: skip
        if not isinstance(raw, list):
            raise ProviderError(
                f"Finnhub company news for {symbol}: unexpected {type(raw).__name__}"
            )
        items = [_news_item(row) for row in raw if isinstance(row, dict)]
        items = [i for i in items if start <= i.published.date() <= end]
        items.sort(key=lambda item: item.published)
        return Fetched(items, source=self.source)

    def profile(self, ticker: str) -> Fetched[CompanyProfile]:
        symbol = ticker.strip().upper()
        raw = self._call("profile", symbol, lambda: self.client.company_profile2(symbol=symbol))
        if not isinstance(raw, dict) or not raw:
            raise UnknownTickerError(f"Finnhub has no company profile for {symbol!r}")
        try:
            return Fetched(profile_from_finnhub(raw), source=self.source)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(f"Finnhub profile for {symbol} is malformed: {exc!r}") from None

    def basic_financials(self, ticker: str) -> Fetched[list[BasicFinancials]]:
        """``series.quarterly`` pivoted to one report per period, oldest first."""
        symbol = ticker.strip().upper()
        raw = self._call(
            "basic financials", symbol,
            lambda: self.client.company_basic_financials(symbol, "all"),
        )  # fmt: skip
        series = (raw.get("series") or {}).get("quarterly") if isinstance(raw, dict) else None
        reports = pivot_quarterly_series(series or {})
        if not reports:
            raise NoDataError(f"Finnhub has no quarterly basic financials for {symbol}")
        return Fetched(reports, source=self.source)

    def _call(self, what: str, symbol: str, call: Callable[[], Any]) -> Any:
        label = f"Finnhub {what} for {symbol}"
        return _with_retries(lambda: self._attempt(call), self.backoff, self.sleep, label)

    def _attempt(self, call: Callable[[], Any]) -> Any:
        self.limiter.acquire()
        try:
            return call()
        except finnhub.FinnhubAPIException as exc:
            status = int(exc.status_code)
            detail = redact_secrets(str(getattr(exc, "message", "")), self._secrets)
            if status in (401, 403):
                raise ProviderAuthError(
                    f"Finnhub refused the request (HTTP {status}): {detail}"
                ) from None
            if status == 429 or status >= 500:
                raise _Retryable(f"HTTP {status}: {detail}", rate_limited=status == 429) from None
            raise ProviderError(f"Finnhub HTTP {status}: {detail}") from None
        except finnhub.FinnhubRequestException as exc:
            detail = redact_secrets(str(exc), self._secrets)[:300]
            raise ProviderError(f"Finnhub sent an unreadable answer: {detail}") from None
        except requests.RequestException as exc:
            detail = redact_secrets(f"{type(exc).__name__}: {exc}", self._secrets)
            raise _Retryable(detail, rate_limited=False) from None


def _news_item(row: dict[str, Any]) -> NewsItem:
    return NewsItem(
        published=dt.datetime.fromtimestamp(int(row["datetime"]), tz=dt.UTC),
        headline=str(row.get("headline") or ""),
        summary=str(row.get("summary") or ""),
    )


def pivot_quarterly_series(series: dict[str, Any]) -> list[BasicFinancials]:
    """``{metric: [{period, v}, ...]}`` → one :class:`BasicFinancials` per period, oldest first.

    Each report's metrics follow the order of the metrics in ``series``; null values are
    skipped.
    """
    by_period: dict[str, dict[str, float | int]] = {}
    for metric, points in series.items():
        for point in points or ():
            value = point.get("v")
            if value is None or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            by_period.setdefault(str(point["period"]), {})[metric] = value
    return [
        BasicFinancials(period=dt.date.fromisoformat(period), metrics=by_period[period])
        for period in sorted(by_period)
    ]


# -- the live bundle -------------------------------------------------------------------------


@dataclass
class LiveMarketData:
    """Yahoo prices plus Finnhub news, profiles and financials, as one MarketData."""

    prices: PriceProvider
    news: NewsProvider
    profiles: ProfileProvider
    financials: FinancialsProvider

    @classmethod
    def from_api_key(
        cls, finnhub_api_key: str, yahoo_session: Any = None, sleep: Sleep = time.sleep
    ) -> LiveMarketData:
        finnhub_provider = FinnhubProvider.from_api_key(finnhub_api_key, sleep=sleep)
        return cls(
            prices=YFinancePriceProvider(session=yahoo_session, sleep=sleep),
            news=finnhub_provider,
            profiles=finnhub_provider,
            financials=finnhub_provider,
        )
