"""The retry decisions on their own, without I/O: what both SDK clients follow."""

from __future__ import annotations

import random

import httpx
import pytest

from clients.errors import (
    APIConnectionError,
    APITimeoutError,
    NotFoundError,
    ServiceUnavailableError,
)
from clients.retry import Attempts, RetryPolicy


def _answer(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"type": "t", "message": "m", "code": "c"}}
    return httpx.Response(status, json=body, headers=headers)


def test_a_not_now_answer_waits_its_retry_after_until_the_retries_run_out() -> None:
    attempts = Attempts(RetryPolicy(max_retries=2), random.Random(0))
    shed = _answer(503, {"Retry-After": "3"})
    assert [attempts.after_answer(shed), attempts.after_answer(shed)] == [3.0, 3.0]
    with pytest.raises(ServiceUnavailableError) as info:
        attempts.after_answer(shed)
    assert info.value.retry_after == 3.0


def test_without_retry_after_the_wait_is_jittered_exponential_backoff() -> None:
    policy = RetryPolicy(max_retries=3, backoff_base_s=0.5, backoff_max_s=1.5)
    attempts = Attempts(policy, random.Random(7))
    waits = [attempts.after_answer(_answer(429)) for _ in range(3)]
    rng = random.Random(7)
    assert waits == [rng.uniform(0, 0.5), rng.uniform(0, 1.0), rng.uniform(0, 1.5)]


def test_an_answer_about_the_request_is_raised_at_once() -> None:
    with pytest.raises(NotFoundError):
        Attempts(RetryPolicy(), random.Random(0)).after_answer(_answer(404))


def test_only_a_refused_connection_is_retried() -> None:
    attempts = Attempts(RetryPolicy(max_retries=1), random.Random(0))
    assert attempts.after_failure(httpx.ConnectError("refused")) >= 0.0
    with pytest.raises(APIConnectionError):
        attempts.after_failure(httpx.ConnectError("refused"))  # retries spent
    with pytest.raises(APITimeoutError):  # the body may have gone out: never repeated
        Attempts(RetryPolicy(), random.Random(0)).after_failure(httpx.ReadTimeout("slow"))
