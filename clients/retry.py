"""When and how long to wait before retrying a request.

Only answers that say "not now" are retried: 429 and 503 (the service sheds load with 503 +
``Retry-After``), and connections refused before the request was sent. Anything else — a
4xx about the request, a 500, a read timeout after the body went out — is returned to the
caller at once, since a retry would repeat the same mistake or do the work twice.

:class:`Attempts` makes those decisions for one request without doing any I/O (as
:class:`clients.stream.StreamState` reads events): the sync and async clients only send,
sleep for the seconds it names, and let through what it raises.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import httpx

from clients.errors import APIConnectionError, APITimeoutError, error_from_response


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    max_retry_after_s: float = 60.0  # a Retry-After longer than this is cut to it
    statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 503}))

    def should_retry_status(self, status: int, attempt: int) -> bool:
        return status in self.statuses and attempt < self.max_retries

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to sleep before retry number ``attempt + 1`` (``attempt`` counts from 0).

        The server's ``Retry-After`` wins when present; otherwise exponential backoff with
        full jitter, so many clients shed at once do not come back in lockstep.
        """
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        return rng.uniform(0.0, ceiling)


NO_RETRY = RetryPolicy(max_retries=0)


@dataclass
class Attempts:
    """The retry decisions of one request: after a failed try, the seconds to wait before
    the next one, or the exception the caller gets."""

    policy: RetryPolicy
    rng: random.Random
    attempt: int = 0  # retries so far

    def after_failure(self, exc: httpx.TransportError) -> float:
        """No response came: retry only when the request surely did not reach the service."""
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) and self.attempt < self.policy.max_retries:
            return self._next(None)
        raise connection_error(exc) from exc

    def after_answer(self, response: httpx.Response) -> float:
        """An error ``response`` (its body read): retry a "not now" answer, else raise the
        typed error for it."""
        error = error_from_response(response)
        if not self.policy.should_retry_status(response.status_code, self.attempt):
            raise error
        return self._next(error.retry_after)

    def _next(self, retry_after: float | None) -> float:
        delay = self.policy.delay(self.attempt, retry_after, self.rng)
        self.attempt += 1
        return delay


def connection_error(exc: httpx.TransportError) -> APIConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"{type(exc).__name__}: {exc}")
    return APIConnectionError(f"{type(exc).__name__}: {exc}")
