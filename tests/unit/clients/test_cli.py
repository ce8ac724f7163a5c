"""The ``dow30`` CLI against the real service app (FakeEngine) over loopback HTTP."""

from __future__ import annotations

import json

import pytest
from client_harness import ADMIN_TOKEN, FakeService
from typer.testing import CliRunner, Result

from clients.cli import app


def run(svc: FakeService, *args: str, token: str | None = None) -> Result:
    env = {"DOW30_URL": svc.url, "COLUMNS": "200"}
    if token is not None:
        env["DOW30_ADMIN_TOKEN"] = token
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def svc(fake_service: FakeService) -> FakeService:
    return fake_service


def test_forecast_json_and_table(svc: FakeService) -> None:
    as_json = run(svc, "forecast", "aapl", "--adapter", "fingpt-llama", "--json")
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.output)
    assert body["ticker"] == "AAPL" and body["adapter"] == "fingpt-llama@v1"
    table = run(svc, "forecast", "KO")
    assert table.exit_code == 0, table.output
    assert "Prediction:" in table.output and "adapter" in table.output


def test_forecast_stream_prints_tokens_then_the_table(svc: FakeService) -> None:
    result = run(svc, "forecast", "MSFT", "--stream")
    assert result.exit_code == 0, result.output
    assert "[Positive Developments]" in result.output and "Prediction:" in result.output


def test_batch_collects_every_ticker(svc: FakeService) -> None:
    result = run(svc, "batch", "AAPL", "KO", "ZZZZ", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert sorted(f["ticker"] for f in body["forecasts"]) == ["AAPL", "KO"]
    assert [e["ticker"] for e in body["errors"]] == ["ZZZZ"]
    table = run(svc, "batch", "AAPL", "MSFT")
    assert "2 forecasts, 0 errors" in table.output


def test_batch_default_is_the_dow30(svc: FakeService) -> None:
    body = json.loads(run(svc, "batch", "--json").output)
    assert body["errors"] == [] and len(body["forecasts"]) == 30


def test_adapters_load_promote_unload_and_list(svc: FakeService) -> None:
    load = run(svc, "adapters", "load", "fingpt-llama", "--version", "v2", token=ADMIN_TOKEN)
    assert load.exit_code == 0, load.output
    assert "loaded fingpt-llama@v2" in load.output and "serving fingpt-llama" in load.output
    staged = run(svc, "adapters", "load", "fingpt-llama", "--version", "v1", "--no-promote",
                 token=ADMIN_TOKEN)  # fmt: skip
    assert staged.exit_code == 0 and "serving" not in staged.output
    promote = run(svc, "adapters", "promote", "canary", "fingpt-llama@v1", token=ADMIN_TOKEN)
    assert "canary -> fingpt-llama@v1" in promote.output
    listing = json.loads(run(svc, "adapters", "list", "--json", token=ADMIN_TOKEN).output)
    assert listing["aliases"]["canary"] == "fingpt-llama@v1"
    assert listing["aliases"]["fingpt-llama"] == "fingpt-llama@v2"
    table = run(svc, "adapters", "list", token=ADMIN_TOKEN)
    assert "fingpt-deepseek" in table.output
    # v1 serves "canary": unloading it is refused with the service's 409.
    refused = run(svc, "adapters", "unload", "fingpt-llama", "v1", token=ADMIN_TOKEN)
    assert refused.exit_code == 1 and "adapter_in_use" in refused.output


def test_adapters_unload_a_version_no_alias_serves(svc: FakeService) -> None:
    staged = run(svc, "adapters", "load", "fingpt-llama", "--version", "v2", "--no-promote",
                 token=ADMIN_TOKEN)  # fmt: skip
    assert staged.exit_code == 0, staged.output
    gone = run(svc, "adapters", "unload", "fingpt-llama", "v2", token=ADMIN_TOKEN)
    assert gone.exit_code == 0, gone.output
    assert "unloaded fingpt-llama@v2" in gone.output
    listing = json.loads(run(svc, "adapters", "list", "--json", token=ADMIN_TOKEN).output)
    assert [a["version"] for a in listing["adapters"] if a["name"] == "fingpt-llama"] == ["v1"]


def test_routing_show_and_set(svc: FakeService) -> None:
    result = run(svc, "routing", "set", "fingpt-llama=3", "fingpt-deepseek=1", token=ADMIN_TOKEN)
    assert result.exit_code == 0, result.output
    shown = json.loads(run(svc, "routing", "show", "--json", token=ADMIN_TOKEN).output)
    assert {a["name"]: a["share"] for a in shown["arms"]} == {
        "fingpt-llama": 0.75,
        "fingpt-deepseek": 0.25,
    }
    bad = run(svc, "routing", "set", "fingpt-llama", token=ADMIN_TOKEN)
    assert bad.exit_code == 2  # usage error: not alias=weight


def test_scorecard(svc: FakeService) -> None:
    run(svc, "forecast", "AAPL", "--adapter", "fingpt-llama")
    result = run(svc, "scorecard", "fingpt-llama", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["overall"]["forecasts"] == 1
    assert "v1" in run(svc, "scorecard", "fingpt-llama").output


def test_errors_exit_1_with_one_line_and_never_print_the_token(svc: FakeService) -> None:
    unknown = run(svc, "forecast", "ZZZZ")
    assert unknown.exit_code == 1 and "unknown_ticker" in unknown.output
    secret = "wrong-token-must-not-leak"
    denied = run(svc, "adapters", "list", token=secret)
    assert denied.exit_code == 1 and "invalid_token" in denied.output
    assert secret not in denied.output
    helped = run(svc, "--help", token=secret)
    assert secret not in helped.output and ADMIN_TOKEN not in helped.output


def test_forecast_and_batch_take_prompt_options(svc: FakeService) -> None:
    result = run(svc, "forecast", "AAPL", "--weeks", "2", "--no-financials", "--news-per-week", "3", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["options"] == {"weeks": 2, "news_per_week": 3, "with_financials": False}
    table = run(svc, "forecast", "KO", "--weeks", "1")
    assert table.exit_code == 0, table.output
    assert "1 week, 5 news a week, with financials" in table.output
    batch = run(svc, "batch", "KO", "MSFT", "--news-per-week", "0", "--json")
    assert batch.exit_code == 0, batch.output
    assert {f["options"]["news_per_week"] for f in json.loads(batch.output)["forecasts"]} == {0}


def test_out_of_range_options_are_the_services_422(svc: FakeService) -> None:
    refused = run(svc, "forecast", "AAPL", "--weeks", "9")
    assert refused.exit_code == 1 and "invalid_request" in refused.output and "weeks" in refused.output
