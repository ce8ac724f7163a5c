"""Admission: at most ``max_inflight`` forecasts in the engines; a bounded, first-come queue
behind them; 503 with ``Retry-After`` beyond that — never an unbounded wait.

With no queue (``max_queued=0``, the default) a forecast over capacity is shed at once. Shedding
alone is not fair under sustained overload: whichever retry lands just after a slot frees wins
it, and a client can be shed for minutes (seen in benchmarks/results/reliability_load.json).
A queue hands each freed slot to the longest waiter instead; a waiter gives up with 503 after
``queue_timeout_s``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

from service.errors import Unavailable


class Admission:
    def __init__(
        self, max_inflight: int, max_queued: int, queue_timeout_s: float, retry_after_s: int
    ) -> None:
        self._max_inflight = max_inflight
        self._max_queued = max_queued
        self._timeout = queue_timeout_s
        self._retry_after = retry_after_s
        self.inflight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``max_inflight`` slots for the body of the ``async with``."""
        if self.inflight < self._max_inflight and not self._waiters:
            self.inflight += 1
        else:
            await self._wait_for_a_slot()  # the releaser hands its slot over: count unchanged
        try:
            yield
        finally:
            self._release()

    async def _wait_for_a_slot(self) -> None:
        if len(self._waiters) >= self._max_queued:
            raise self._overloaded(f"over capacity ({self.inflight} forecasts in flight)")
        granted = asyncio.get_running_loop().create_future()
        self._waiters.append(granted)
        try:
            async with asyncio.timeout(self._timeout):
                await granted
        except BaseException as exc:  # timed out, or the client left while waiting
            if granted.done() and not granted.cancelled():
                self._release()  # handed a slot in the same instant: pass it on
            else:
                with contextlib.suppress(ValueError):  # a release may have skipped it already
                    self._waiters.remove(granted)
            if isinstance(exc, TimeoutError):
                raise self._overloaded(
                    f"no forecast slot freed within {self._timeout:g} s"
                ) from None
            raise

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to the longest waiter
                return
        self.inflight -= 1

    def _overloaded(self, message: str) -> Unavailable:
        return Unavailable(message, code="overloaded", retry_after_s=self._retry_after)
