"""Schemathesis against the service's own OpenAPI schema, over loopback HTTP on FakeEngines:
every route (admin routes with the token), generated valid and invalid bodies, parameters and
headers. No answer may be a 5xx, and every answer must match the schema: a documented status,
content type, headers and body (errors in the one error shape).

Left out: ``positive_data_acceptance``. A request can be valid by the schema and still be
refused on purpose (a ticker outside the Dow 30 → 404, a future date → 422); those answers
are documented, and the status/schema checks below hold them to the schema.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.http import serve_http

from forecast.providers.snapshot import SnapshotMarketData
from service.app import create_app
from service.settings import ServiceSettings
from service.testing import FakeEngine, write_stub_adapter

TOKEN = "fuzz-admin-token-5a4b3c"
TODAY = dt.datetime(2024, 1, 5, 12, 0, tzinfo=dt.UTC)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def build_app(tmp: Path | None) -> Any:
    """The service over FakeEngines; with ``tmp`` None, just enough of it for its schema."""
    root = (tmp or Path("/nonexistent")) / "adapters"
    if tmp is not None:
        for name, version, base in (
            ("fingpt-llama", "v1", "llama"), ("fingpt-llama", "v2", "llama"),
            ("fingpt-deepseek", "v1", "deepseek"),
        ):
            write_stub_adapter(root, name, version, base)
    settings_ = ServiceSettings(
        _env_file=None,  # type: ignore[call-arg]
        admin_token=TOKEN, adapter_root=root,
        db_url=f"sqlite:///{tmp / 'forecasts.sqlite3'}" if tmp else "sqlite://",
        preload=["fingpt-llama@v1", "fingpt-deepseek@v1"], max_new_tokens=32, weeks=1,
        news_per_week=1, max_batch=8,
    )
    engines = {"llama": FakeEngine("llama"), "deepseek": FakeEngine("deepseek")}
    return create_app(settings_, engines, SnapshotMarketData(), now=lambda: TODAY)


# The schema is the app's own, read at collection (pytest 9 cannot run schemathesis's
# fixture-loaded schemas); requests go to a real server started per module.
schema = schemathesis.openapi.from_dict(build_app(None).openapi())


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_http(build_app(tmp_path_factory.mktemp("fuzz"))) as url:
        # One forecast first: it loads the tokenizer the context check uses, which on a busy
        # 2-core host takes longer than a fuzzed request's read timeout.
        httpx.post(f"{url}/v1/forecast", json={"ticker": "KO"}, timeout=300)
        yield url


@schema.parametrize()
@settings(
    max_examples=100, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
def test_no_server_errors_and_every_answer_matches_the_schema(case: Any, service_url: str) -> None:
    case.call_and_validate(
        base_url=service_url, headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS,
        timeout=60,  # a loaded host; the checks are about status and shape, not speed
    )
