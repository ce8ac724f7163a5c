"""Prompt data gathered so that a slow or failing provider costs its own forecasts only.

A provider that hangs or retries with backoff holds a thread for as long as it does. Such
work never runs on anyio's shared worker threads (which dependencies, log writes and the
scorer also use), but on :class:`MarketGate`'s own pool of ``provider_threads``:

1. With a caching market (:class:`~forecast.providers.cache.CachedMarketData`) the prompt is
   first built from the cache alone, without touching the network: fresh entries as they
   are, expired ones served stale at once and refreshed on the provider pool in the
   background (stale-while-revalidate). These builds take worker threads under a limiter of
   their own (``provider_threads`` at once), so a burst of them leaves anyio's shared tokens
   free and does not crowd the event loop out of the GIL.
2. Only when something was never cached is the prompt built on the provider pool, against
   the live source. The whole build, waits for a cache-read slot or a pool thread included,
   has ``provider_deadline_s`` from the moment the forecast reaches the gate.
   Past the deadline the forecast gets 503 ``provider_timeout`` with ``Retry-After``, and is
   counted in ``forecast_provider_timeouts_total``. Work that has not started by then is
   dropped; work already running finishes in its thread and fills the cache.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import anyio

from forecast.providers.base import MarketData
from forecast.providers.cache import CachedMarketData, CacheMiss
from forecast.windows import BuiltPrompt, WindowConfig, build_prompt
from service.errors import Unavailable
from service.telemetry import Telemetry

log = logging.getLogger(__name__)


class MarketGate:
    def __init__(
        self,
        market: MarketData,
        telemetry: Telemetry,
        *,
        threads: int,
        deadline_s: float,
        retry_after_s: int,
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="provider")
        self._cache_reads = anyio.CapacityLimiter(threads)
        self._telemetry = telemetry
        self._deadline_s = deadline_s
        self._retry_after_s = retry_after_s
        self._cached_only: MarketData | None = None
        self._gather = market
        if isinstance(market, CachedMarketData):
            self._cached_only = market.cache_first(self._pool.submit, fetch_missing=False)
            self._gather = market.cache_first(self._pool.submit, fetch_missing=True)

    async def build(self, symbol: str, day: dt.date, window: WindowConfig) -> BuiltPrompt:
        """The prompt for ``symbol`` on ``day``: from the cache when it holds every input,
        else gathered on the provider pool; all of it within the deadline, counted from here
        (a wait for a cache-read slot or a pool thread spends the same budget)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline_s
        if self._cached_only is not None:
            try:
                with anyio.fail_after(self._deadline_s):
                    return await anyio.to_thread.run_sync(
                        partial(build_prompt, self._cached_only, symbol, day, window),
                        limiter=self._cache_reads,
                    )
            except CacheMiss:
                pass
            except TimeoutError:
                raise self._timed_out(symbol) from None
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise self._timed_out(symbol)
        gathering = loop.run_in_executor(
            self._pool, partial(build_prompt, self._gather, symbol, day, window)
        )
        try:
            return await asyncio.wait_for(gathering, remaining)
        except TimeoutError:
            raise self._timed_out(symbol) from None

    def _timed_out(self, symbol: str) -> Unavailable:
        self._telemetry.provider_timeouts.inc()
        message = f"market data for {symbol} not gathered within {self._deadline_s:g} s"
        log.warning("provider timeout: %s", message)
        return Unavailable(message, code="provider_timeout", retry_after_s=self._retry_after_s)

    def close(self) -> None:
        """Drop queued work; threads still waiting on a provider end on their own."""
        self._pool.shutdown(wait=False, cancel_futures=True)
