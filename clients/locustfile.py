"""Locust users for the forecast service, for people who run load with locust.

    pip install locust
    locust -f clients/locustfile.py --host http://127.0.0.1:8000 \\
        --users 16 --spawn-rate 4 --run-time 5m --headless --csv var/locust

Each simulated user has its own ``X-Client-Key`` (so A/B stays sticky per user) and asks for
forecasts of a ticker mix; one in ``DOW30_STREAM_EVERY`` requests is streamed and its
time to first token reported as a separate ``ttft`` entry (locust times the ``forecast stream``
entry to the response headers only). Requests are named by the arm
that served them (``forecast [arm]``), so locust's table is per arm. Set ``DOW30_TICKERS``
(comma list) and ``DOW30_AS_OF`` (YYYY-MM-DD) to change the mix. The built-in load
generator (``python -m clients.loadgen``) adds hot-swaps and writes JSON; this file only
produces load. It uses plain HTTP (no SDK) because locust times its own client's requests.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from typing import Any

from locust import HttpUser, between, events, task

TICKERS = os.environ.get("DOW30_TICKERS", "AAPL,MSFT,KO,JPM,CVX,WMT").split(",")
AS_OF = os.environ.get("DOW30_AS_OF")
STREAM_EVERY = int(os.environ.get("DOW30_STREAM_EVERY", "4"))


class ForecastUser(HttpUser):  # type: ignore[misc,unused-ignore]  # locust is optional
    wait_time = between(0.0, 0.5)

    def on_start(self) -> None:
        self.client_key = f"locust-{uuid.uuid4().hex[:12]}"
        self.calls = 0

    def _body(self, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"ticker": random.choice(TICKERS), "stream": stream}
        if AS_OF:
            body["as_of"] = AS_OF
        return body

    @task  # type: ignore[untyped-decorator,unused-ignore]
    def forecast(self) -> None:
        self.calls += 1
        if STREAM_EVERY and self.calls % STREAM_EVERY == 0:
            self._stream()
            return
        with self.client.post(
            "/v1/forecast", json=self._body(False), headers={"X-Client-Key": self.client_key},
            name="forecast", catch_response=True,
        ) as response:  # fmt: skip
            if response.status_code != 200:
                response.failure(_error_type(response.text, response.status_code))
                return
            arm = response.json().get("arm", "?")
            response.request_meta["name"] = f"forecast [{arm}]"
            response.success()

    def _stream(self) -> None:
        started = time.perf_counter()
        first: float | None = None
        result: dict[str, Any] | None = None
        event = ""
        with self.client.post(
            "/v1/forecast", json=self._body(True), stream=True, name="forecast stream",
            headers={"X-Client-Key": self.client_key, "Accept": "text/event-stream"},
            catch_response=True,
        ) as response:  # fmt: skip
            if response.status_code != 200:
                response.failure(_error_type(response.text, response.status_code))
                return
            for raw in response.iter_lines(decode_unicode=True):
                if raw.startswith("event:"):
                    event = raw.partition(":")[2].strip()
                elif raw.startswith("data:") and event == "token" and first is None:
                    first = time.perf_counter()
                elif raw.startswith("data:") and event == "result":
                    result = json.loads(raw.partition(":")[2])
                elif raw.startswith("data:") and event == "error":
                    response.failure(_error_type(raw.partition(":")[2], 200))
                    return
            if result is None:
                response.failure("stream ended without a result")
                return
            response.success()
        if first is not None:
            events.request.fire(
                request_type="SSE", name=f"ttft [{result.get('arm', '?')}]",
                response_time=(first - started) * 1000, response_length=0, exception=None,
                context={},
            )  # fmt: skip


def _error_type(text: str, status: int) -> str:
    try:
        err = json.loads(text)["error"]
        return f"{status} {err['type']}/{err.get('code')}"
    except (ValueError, KeyError, TypeError):
        return f"{status} {text[:80]}"
