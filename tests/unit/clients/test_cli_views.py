"""What a person sees: ``dow30 forecast`` and ``dow30 scorecard`` in an 80-column terminal,
against the real service app (FakeEngine) and on a hand-made scorecard."""

from __future__ import annotations

import json

from client_harness import ADMIN_TOKEN, FakeService
from rich.console import Console
from typer.testing import CliRunner, Result

from clients.cli import app
from clients.models import Scorecard
from clients.views import METRICS, items, scorecard_view


def run(svc: FakeService, *args: str, columns: int = 80) -> Result:
    env = {"DOW30_URL": svc.url, "DOW30_ADMIN_TOKEN": ADMIN_TOKEN, "COLUMNS": str(columns)}
    return CliRunner().invoke(app, list(args), env=env)


def fits(output: str, width: int = 80) -> bool:
    return all(len(line) <= width for line in output.splitlines())


def test_forecast_reads_top_to_bottom_at_80_columns(fake_service: FakeService) -> None:
    result = run(fake_service, "forecast", "AAPL", "--adapter", "fingpt-llama")
    assert result.exit_code == 0, result.output
    raw = json.loads(run(fake_service, "forecast", "AAPL", "--adapter", "fingpt-llama", "--json").output)
    text = result.output
    expected_order = [
        "AAPL", raw["company"], f"week {raw['week_start']} → {raw['week_end']}",
        f"Prediction: {raw['prediction']['text']}", "read from the answer's Prediction line",
        "Positive developments", "1. Strong demand.", "2. New products.",
        "Potential concerns", "1. Margin pressure.",
        "Analysis", "The balance of news points this way.",
        "adapter", "fingpt-llama@v1", "latency", "total", "TTFT", "data", "fresh",
    ]  # fmt: skip
    at = 0
    for piece in expected_order:  # each after the one before
        assert piece in text[at:], (piece, text)
        at = text.index(piece, at) + len(piece)
    assert fits(text)


def test_forecast_json_is_the_raw_response(fake_service: FakeService) -> None:
    body = json.loads(run(fake_service, "forecast", "KO", "--json").output)
    assert body["positive_developments"].startswith("1. ") and body["prediction"]["source"] == "line"


def test_items_split_numbered_sections() -> None:
    assert items("1. Strong demand.\n2) New\nproducts.") == ["Strong demand.", "New\nproducts."]
    assert items("No numbers at all.") == ["No numbers at all."]


def _row(version: str | None, acc: float, lo: float, hi: float) -> dict[str, object]:
    return {
        "adapter": "fingpt-llama", "version": version, "forecasts": 120, "parsed": 118,
        "probed": 2, "scored": 100, "parse_failure_rate": 0.0167, "binary_accuracy": acc,
        "binary_accuracy_ci": {"low": lo, "high": hi}, "mse": 11.25,
        "mse_ci": {"low": 9.5, "high": 13.0}, "mean_latency_s": 1.23, "mean_ttft_s": 0.045,
        "tokens_per_s": 812.3,
    }  # fmt: skip


CARD = Scorecard.model_validate({
    "adapter": "fingpt-llama",
    "overall": _row(None, 0.6, 0.55, 0.65),
    "versions": [_row(f"v{i}-2024-01-{i:02d}", 0.5 + i / 100, 0.4, 0.7) for i in range(1, 7)],
    "compare": [{"a": "fingpt-llama@v2-2024-01-02", "b": "fingpt-deepseek@v10", "scored_a": 100,
                 "scored_b": 100, "accuracy_a": 0.52, "accuracy_b": 0.61, "difference": -0.09,
                 "z": -1.29, "p_value": 0.197}],
})  # fmt: skip


def test_scorecard_keeps_every_label_and_fits_80_columns() -> None:
    console = Console(width=80, record=True, color_system=None)
    console.print(scorecard_view(CARD, console.width))
    text = console.export_text()
    assert fits(text), text
    for label, _ in METRICS:
        assert label.strip() in text
    for version in [v.version for v in CARD.versions]:
        assert version is not None and version in text  # six versions: split over two tables
    assert "all" in text and "0.550–0.650" in text and "9.50–13.00" in text
    assert "…" not in text  # nothing cut
    assert "v2-2024-01-02 vs" in text and "fingpt-deepseek@v10" in text  # b folds, not cut
    assert "-0.090" in text and "0.197" in text


def test_scorecard_cli_after_scoring_two_versions(fake_service: FakeService) -> None:
    for ticker in ("AAPL", "KO", "MSFT"):
        run(fake_service, "forecast", ticker, "--adapter", "fingpt-llama")
    assert run(fake_service, "adapters", "load", "fingpt-llama", "--version", "v2").exit_code == 0
    for ticker in ("AAPL", "KO", "MSFT", "JPM"):
        run(fake_service, "forecast", ticker, "--adapter", "fingpt-llama")
        run(fake_service, "forecast", ticker, "--adapter", "fingpt-deepseek")
    from clients.sdk import Client

    with Client(fake_service.url, admin_token=ADMIN_TOKEN) as c:
        assert c.score_now() == 11
    result = run(fake_service, "scorecard", "fingpt-llama", "--vs", "fingpt-deepseek")
    assert result.exit_code == 0, result.output
    assert fits(result.output), result.output
    for label in ("binary accuracy", "95% CI", "parse failures", "v1", "v2", "all",
                  "two-proportion z-test", "v2 vs v1", "v1 vs fingpt-deepseek@v1"):  # fmt: skip
        assert label in result.output, result.output
    body = json.loads(run(fake_service, "scorecard", "fingpt-llama", "--json").output)
    v1 = body["versions"][0]
    assert v1["scored"] == 3 and 0 <= v1["binary_accuracy_ci"]["low"] <= v1["binary_accuracy"]
    assert [(t["a"], t["b"]) for t in body["compare"]] == [("fingpt-llama@v2", "fingpt-llama@v1")]


def test_probed_and_unparsed_forecasts_say_so() -> None:
    from clients.models import Forecast
    from clients.views import forecast_view

    def render(**fields: object) -> str:
        console = Console(width=80, record=True, color_system=None)
        console.print(forecast_view(Forecast.model_validate({"ticker": "KO", **fields})))
        return console.export_text()

    probed = render(prediction={"direction": "down", "bin": "D5+", "percent_low": 5.0,
                                "source": "probe"})  # fmt: skip
    assert "Prediction: Down by >5% (D5+, probed: the answer was cut off" in probed
    unparsed = render(parse_error="answer lacks the three FinGPT sections",
                      raw_text="Apple's market cap [is] large.")  # fmt: skip
    assert "Prediction: none (answer lacks the three FinGPT sections)" in unparsed
    assert "Answer (unparsed)" in unparsed and "Apple's market cap [is] large." in unparsed


def test_an_answer_cut_by_its_budget_says_so() -> None:
    from clients.models import Forecast
    from clients.views import forecast_view

    def shown(**fields: object) -> str:
        console = Console(width=80, record=True)
        console.print(forecast_view(Forecast(ticker="KO", raw_text="[Positive", generated_tokens=6, **fields)))
        return console.export_text()

    assert "ended by length" in shown(finish_reason="length")
    assert "ended by" not in shown(finish_reason="stop") and "ended by" not in shown()
