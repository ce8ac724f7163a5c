"""When and how long to wait before retrying a request.

Only answers that say "not now" are retried: 429 and 503 (the service sheds load with 503 +
``Retry-After``), and connections refused before the request was sent. Anything else — a
4xx about the request, a 500, a read timeout after the body went out — is returned to the
caller at once, since a retry would repeat the same mistake or do the work twice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


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
