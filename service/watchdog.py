"""Hung engines: alive by every health check, yet their requests make no progress.

Every generation the forecaster sends goes through :meth:`StallWatch.chunks`, which stamps
the engine's progress on each token. An engine is *stalled* when one of its requests has been
waiting on it for ``stall_s`` with no token from any of its requests meanwhile; with nothing
in flight it is never stalled. :meth:`StallWatch.fail` ends the waiting requests with
:class:`EngineStalled` (a 503), the way ``asyncio.timeout`` ends an await: their task is
cancelled and the cancellation turned into the error. The supervisor then restarts the engine
(:mod:`service.supervisor`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from service.engine import Chunk, EngineDead


class EngineStalled(EngineDead):
    """The engine made no progress for the stall time; its requests were ended."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class _Waiter:
    task: asyncio.Task[Any] | None = None
    since: float | None = None  # when it began waiting for its next chunk
    stalled: str | None = None  # why it was ended


@dataclass
class _Engine:
    progress: float = 0.0  # when any request last got a token
    requests: set[_Waiter] = field(default_factory=set)


class StallWatch:
    def __init__(
        self, stall_s: float, retry_after_s: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stall_s = stall_s
        self.retry_after_s = retry_after_s
        self.clock = clock
        self._engines: dict[str, _Engine] = {}

    async def chunks(self, base: str, stream: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        """``stream`` (a generation on ``base``'s engine), watched for progress."""
        engine = self._engines.setdefault(base, _Engine())
        if not engine.requests:  # the clock starts with the first request in flight
            engine.progress = self.clock()
        me = _Waiter()
        engine.requests.add(me)
        try:
            while True:
                me.task, me.since = asyncio.current_task(), self.clock()
                try:
                    chunk = await anext(stream)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if me.stalled is None or (me.task is not None and me.task.uncancel() > 0):
                        raise  # cancelled by someone else too (a client that left)
                    raise EngineStalled(me.stalled, self.retry_after_s) from None
                me.since = None
                if chunk.delta or chunk.tokens:
                    engine.progress = self.clock()
                yield chunk
        finally:
            engine.requests.discard(me)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def stalled(self) -> list[str]:
        """Bases with a request waiting ``stall_s`` or more since the last token of any."""
        now = self.clock()
        return sorted(
            base
            for base, engine in self._engines.items()
            if any(
                w.since is not None and now - max(w.since, engine.progress) >= self.stall_s
                for w in engine.requests
            )
        )

    def fail(self, base: str) -> int:
        """End the requests waiting on ``base``'s engine with :class:`EngineStalled`; how many."""
        engine = self._engines.get(base)
        if engine is None:
            return 0
        why = f"engine {base} made no progress for {self.stall_s:g} s"
        ended = 0
        for waiter in engine.requests:
            if waiter.since is not None and waiter.stalled is None and waiter.task is not None:
                waiter.stalled = why
                waiter.task.cancel(why)
                ended += 1
        engine.progress = self.clock()  # those left (not waiting) get a fresh stall time
        return ended
