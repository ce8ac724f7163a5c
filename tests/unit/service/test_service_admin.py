"""Admin routes: bearer token compared in constant time; no token configured → disabled."""

from __future__ import annotations

import hmac
from typing import Any

import pytest

from service import deps
from service.testing import error_of

pytestmark = pytest.mark.asyncio

ADMIN_CALLS = [
    ("GET", "/v1/adapters", None),
    ("POST", "/v1/adapters", {"name": "fingpt-llama"}),
    ("POST", "/v1/adapters/promote", {"alias": "x", "adapter": "fingpt-llama@v1"}),
    ("DELETE", "/v1/adapters/fingpt-llama/versions/v1", None),
    ("GET", "/v1/routing", None),
    ("PUT", "/v1/routing", {"arms": [{"name": "a", "adapter": "fingpt-llama", "weight": 1}]}),
    ("POST", "/v1/scorecard/score", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
async def test_no_token_configured_disables_admin_routes(
    serve: Any, method: str, path: str, body: Any
) -> None:
    async with serve(admin_token=None) as client:
        r = await client.request(method, path, json=body, headers={"Authorization": "Bearer x"})
    assert r.status_code == 403
    assert error_of(r)["code"] == "admin_disabled"


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
async def test_missing_or_wrong_token_is_401(
    serve: Any, token: str, method: str, path: str, body: Any
) -> None:
    async with serve() as client:
        missing = await client.request(method, path, json=body)
        wrong = await client.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
        basic = await client.request(method, path, json=body, headers={"Authorization": f"Basic {token}"})
    assert missing.status_code == wrong.status_code == basic.status_code == 401
    assert error_of(missing)["code"] == "missing_token"
    assert error_of(wrong)["code"] == "invalid_token"
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    for r in (missing, wrong, basic):
        assert token not in r.text


async def test_right_token_passes_and_is_compared_in_constant_time(
    serve: Any, admin: dict[str, str], token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(deps.hmac, "compare_digest", spy)
    async with serve() as client:
        r = await client.get("/v1/adapters", headers=admin)
    assert r.status_code == 200
    assert calls == [(token.encode(), token.encode())]


async def test_forecasts_scorecards_and_probes_need_no_token(serve: Any) -> None:
    async with serve(admin_token=None) as client:
        assert (await client.post("/v1/forecast", json={"ticker": "KO"})).status_code == 200
        assert (await client.get("/v1/adapters/fingpt-llama/scorecard")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200


async def test_the_token_never_appears_in_metrics_or_openapi(
    serve: Any, admin: dict[str, str], token: str
) -> None:
    async with serve() as client:
        await client.get("/v1/adapters", headers=admin)
        texts = [(await client.get(p)).text for p in ("/metrics", "/openapi.json", "/readyz")]
    assert all(token not in t for t in texts)
