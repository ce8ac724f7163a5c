"""Helpers of the reliability tests (a module of its own: every conftest is named conftest)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(predicate: Callable[[], bool], *, timeout_s: float = 20.0) -> None:
    """Poll ``predicate`` until true; fail after ``timeout_s`` (a bound, not a timing claim)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
