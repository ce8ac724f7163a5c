"""Issue 18, items 2, 4, 7 and 9: an escaping symlink does not break listings, a streamed
forecast over capacity is a 503 with Retry-After, the access log masks ``?token=``, and a
request body that never completes is answered 408."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from uvicorn.logging import AccessFormatter

from service.logfilters import ACCESS_LOGGER, RedactQuery, redact_access_log
from service.testing import error_of, write_stub_adapter

# -- 2. a symlink out of the adapter root ------------------------------------------------------


async def test_listing_skips_symlinks_out_of_the_root_and_loading_them_is_403(
    serve: Any, admin: dict[str, str], adapter_root: Path, tmp_path: Path,
    caplog: Any,
) -> None:
    outside = tmp_path / "outside"
    write_stub_adapter(outside, "evil", "v1", "llama")
    os.symlink(outside / "evil", adapter_root / "evil")  # a name that leaves the root
    os.symlink(outside / "evil" / "v1", adapter_root / "fingpt-llama" / "v9")  # a version
    async with serve() as client:
        listed = await client.get("/v1/adapters", headers=admin)
        again = await client.get("/v1/adapters", headers=admin)
        card = await client.get("/v1/adapters/fingpt-llama/scorecard")
        by_name = await client.post("/v1/adapters", json={"name": "evil"}, headers=admin)
        by_version = await client.post(
            "/v1/adapters", json={"name": "fingpt-llama", "version": "v9"}, headers=admin
        )
    assert listed.status_code == again.status_code == 200, listed.text
    assert listed.json()["available"] == {"fingpt-deepseek": ["v1"], "fingpt-llama": ["v1"]}
    assert card.status_code == 200, card.text
    assert by_name.status_code == by_version.status_code == 403
    assert error_of(by_name)["code"] == error_of(by_version)["code"] == "adapter_path_forbidden"
    skipped = [r for r in caplog.records if "links outside the adapter root" in r.getMessage()]
    assert len(skipped) == 2  # each escaping entry logged once, not on every listing


# -- 4. over capacity, streamed ----------------------------------------------------------------


async def test_streamed_forecast_over_capacity_is_503_with_retry_after(
    serve: Any, engines: Any
) -> None:
    llama = engines["llama"]
    llama.gate = asyncio.Event()
    body = {"ticker": "KO", "adapter": "fingpt-llama"}
    async with serve(max_inflight=1, retry_after_s=3) as client:
        held = asyncio.create_task(client.post("/v1/forecast", json=body))
        while llama.running < 1:
            await asyncio.sleep(0.01)
        shed = await client.post("/v1/forecast", json={**body, "stream": True})
        llama.gate.set()
        done = await held
        after = await client.post("/v1/forecast", json={**body, "stream": True})
    assert shed.status_code == 503 and shed.headers["Retry-After"] == "3"
    assert shed.headers["content-type"].startswith("application/json")
    assert error_of(shed)["code"] == "overloaded"
    assert done.status_code == 200
    assert after.status_code == 200 and "event: result" in after.text  # the slot came back


# -- 7. the admin token in the access log ------------------------------------------------------


def access_record(path: str) -> logging.LogRecord:
    """A record as uvicorn's h11/httptools protocols emit it on ``uvicorn.access``."""
    return logging.LogRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 0, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:50000", "GET", path, "1.1", 200), None,
    )


def test_access_log_masks_token_api_key_and_key_query_values() -> None:
    record = access_record("/v1/adapters?token=s3cret-admin&api_key=k1&key=k2&keep=1&monkey=3")
    assert RedactQuery().filter(record)
    line = AccessFormatter("%(client_addr)s - \"%(request_line)s\" %(status_code)s",
                           use_colors=False).format(record)
    assert "s3cret-admin" not in line and "k1" not in line and "k2" not in line
    assert line == (
        '127.0.0.1:50000 - "GET /v1/adapters?token=***&api_key=***&key=***&keep=1&monkey=3 '
        'HTTP/1.1" 200 OK'
    )


def test_redaction_is_installed_once_on_uvicorns_access_logger(caplog: Any) -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    before = list(logger.filters)
    try:
        redact_access_log()
        redact_access_log()
        assert sum(isinstance(f, RedactQuery) for f in logger.filters) == 1
        with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
            logger.handle(access_record("/v1/adapters?token=s3cret-admin"))
        assert "s3cret-admin" not in caplog.text and "token=***" in caplog.text
    finally:
        logger.filters[:] = before


# -- 9. a body that never completes ------------------------------------------------------------


async def test_a_body_that_never_completes_is_408(serve: Any) -> None:
    async with serve(body_timeout_s=0.2) as client:
        app = client.app
        sent: list[dict[str, Any]] = []
        first = True

        async def receive() -> dict[str, Any]:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": b'{"ticker": "K', "more_body": True}
            await asyncio.Event().wait()  # the rest of the body never comes
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/v1/forecast", "raw_path": b"/v1/forecast",
            "query_string": b"", "root_path": "",
            "headers": [(b"host", b"svc"), (b"content-type", b"application/json"),
                        (b"content-length", b"40")],
            "client": ("127.0.0.1", 50000), "server": ("svc", 80),
        }
        await asyncio.wait_for(app(scope, receive, send), timeout=5)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 408
    body = json.loads(sent[1]["body"])
    assert body == {"error": {"type": "invalid_request_error", "code": "request_timeout",
                              "message": "request body not received within 0.2 s"}}
