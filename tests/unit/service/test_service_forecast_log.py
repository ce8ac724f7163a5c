"""The forecast log survives a restart (real SQLite file in WAL mode, and a real PostgreSQL
server: every test here runs on both); the scorer fills realized returns once the target week
has closed; backfill yields per-adapter scorecards."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import text

from clients.retry import NO_RETRY
from forecast.answer import bin_phrases
from forecast.windows import WindowConfig, build_prompt
from service.backfill import replay, sundays
from service.bootstrap import sdk_client
from service.forecast_log import ForecastLog, ForecastRow, new_id


@pytest.fixture
def db_url(any_db_url: str) -> str:
    """Every test of this module on SQLite and on PostgreSQL (tests/conftest.py)."""
    return any_db_url


async def test_log_survives_a_restart(serve: Any, db_url: str) -> None:
    async with serve() as client:
        ids = [(await client.post("/v1/forecast", json={"ticker": t})).json()["id"] for t in ("KO", "JPM", "V")]
    async with serve() as client:
        cards = [(await client.get(f"/v1/adapters/{a}/scorecard")).json() for a in ("fingpt-llama", "fingpt-deepseek")]
        more = (await client.post("/v1/forecast", json={"ticker": "KO"})).json()["id"]
    log = ForecastLog(db_url)
    if db_url.startswith("sqlite"):
        with log.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert log.count() == 4
    assert sum(c["overall"]["forecasts"] for c in cards if c["overall"]) == 3
    for forecast_id in [*ids, more]:
        row = log.get(forecast_id)
        assert row is not None and len(row.prompt_hash) == 64 and row.total_s is not None


async def test_each_row_records_arm_version_and_latencies(serve: Any, db_url: str) -> None:
    async with serve() as client:
        body = (await client.post("/v1/forecast", json={"ticker": "KO"}, headers={"X-Client-Key": "k"})).json()
    row = ForecastLog(db_url).get(body["id"])
    assert row is not None
    assert (row.ticker, row.arm, f"{row.adapter}@{row.version}") == ("KO", body["arm"], body["adapter"])
    assert row.as_of == dt.date(2023, 12, 31) and row.target_end == dt.date(2024, 1, 7)
    assert row.prediction == body["prediction"]["bin"]
    assert row.ttft_s == pytest.approx(body["latency"]["ttft_s"])
    assert body["finish_reason"] == row.finish_reason == "stop"
    assert row.realized_return is None


async def test_scorer_waits_for_the_week_to_close(
    serve: Any, admin: dict[str, str], clock: Any, market: Any
) -> None:
    async with serve() as client:
        for ticker in ("KO", "JPM", "AAPL"):
            await client.post("/v1/forecast", json={"ticker": ticker, "adapter": "fingpt-llama"})
        early = (await client.post("/v1/scorecard/score", headers=admin)).json()
        clock.now = dt.datetime(2024, 1, 8, tzinfo=dt.UTC)
        scored = (await client.post("/v1/scorecard/score", headers=admin)).json()
        again = (await client.post("/v1/scorecard/score", headers=admin)).json()
        card = (await client.get("/v1/adapters/fingpt-llama/scorecard")).json()
        metrics = (await client.get("/metrics")).text
        log = client.app.state.service.forecast_log  # type: ignore[attr-defined]
        rows = [r for r in _rows(log) if r.adapter == "fingpt-llama"]
    assert early == {"updated": 0} and scored == {"updated": 3} and again == {"updated": 0}
    for row in rows:
        built = build_prompt(market, row.ticker, row.as_of, WindowConfig(weeks=1))
        assert row.realized_return == pytest.approx(built.realized_return)
        assert row.realized_bin == built.label
    hits = [r.predicted_up == r.realized_up for r in rows]
    mse = sum((r.predicted_mid - r.realized_mid) ** 2 for r in rows) / len(rows)
    version = card["versions"][0]
    assert version["scored"] == 3
    assert version["binary_accuracy"] == pytest.approx(sum(hits) / 3)
    assert version["mse"] == pytest.approx(mse)
    assert 'forecast_scored_forecasts{adapter="fingpt-llama",version="v1"} 3.0' in metrics
    assert "forecast_realized_binary_accuracy{" in metrics


# Hand values, independent of the product's code: the snapshot CSVs' Adj Close of Friday
# 2023-12-29 (the last close before the week of 2023-12-31) and of Friday 2024-01-05 (its last).
HAND_RETURNS = {
    "KO": (59.669998 / 58.93 - 1, "U2"),  # +1.26 %
    "JPM": (172.270004 / 169.057541 - 1, "U2"),  # +1.90 % (a dividend in the adjusted close)
    "AAPL": (180.949097 / 192.284637 - 1, "D5+"),  # -5.90 %
}


async def test_realized_returns_match_closes_computed_by_hand(
    serve: Any, admin: dict[str, str], clock: Any
) -> None:
    async with serve() as client:
        for ticker in HAND_RETURNS:
            await client.post("/v1/forecast", json={"ticker": ticker, "adapter": "fingpt-llama"})
        clock.now = dt.datetime(2024, 1, 8, tzinfo=dt.UTC)
        await client.post("/v1/scorecard/score", headers=admin)
        card = (await client.get("/v1/adapters/fingpt-llama/scorecard")).json()
        rows = _rows(client.app.state.service.forecast_log)  # type: ignore[attr-defined]
    assert {r.as_of for r in rows} == {dt.date(2023, 12, 31)}
    for row in rows:
        realized, label = HAND_RETURNS[row.ticker]
        assert row.realized_return == pytest.approx(realized, abs=1e-9)
        assert row.realized_bin == label
    # MSE over bin midpoints (U2 -> 1.5, D5+ -> -5.5), each forecast's own predicted midpoint
    expected = sum(
        (r.predicted_mid - {"U2": 1.5, "D5+": -5.5}[HAND_RETURNS[r.ticker][1]]) ** 2 for r in rows
    ) / 3
    assert card["versions"][0]["mse"] == pytest.approx(expected)


def test_weeks_the_provider_cannot_price_stay_pending(db_url: str, market: Any) -> None:
    from service.scoring import Scorer
    from service.telemetry import Telemetry

    log = ForecastLog(db_url)
    for as_of in (dt.date(2024, 3, 3), dt.date(2024, 3, 10)):  # prices end 2024-03-08
        log.add(_row("AAPL", as_of))
    now = dt.datetime(2024, 4, 1, tzinfo=dt.UTC)
    assert Scorer(log, market.prices, Telemetry(), lambda: now).score_pending() == 1
    assert [r.as_of for r in _rows(log) if r.realized_return is None] == [dt.date(2024, 3, 10)]


async def test_backfill_produces_per_adapter_scorecards(serve: Any) -> None:
    weeks = sundays(dt.date(2023, 12, 1), dt.date(2023, 12, 20))
    assert weeks == [dt.date(2023, 12, 3), dt.date(2023, 12, 10), dt.date(2023, 12, 17)]
    async with serve() as client:
        app = client.app
        async with sdk_client(app, app.state.service.settings, retry=NO_RETRY) as sdk:
            report = await replay(sdk, weeks, ["KO", "JPM"], ["fingpt-llama", "fingpt-deepseek"])
    assert report["requests"] == 12 and report["failed"] == []
    for adapter in ("fingpt-llama", "fingpt-deepseek"):
        card = report["scorecards"][adapter]["versions"][0]
        assert card["forecasts"] == card["scored"] == 6
        assert 0 <= card["binary_accuracy"] <= 1 and card["mse"] >= 0
        assert card["mean_latency_s"] > 0


def _row(ticker: str, as_of: dt.date) -> ForecastRow:
    return ForecastRow(
        id=new_id(), created_at=dt.datetime(2024, 3, 1, tzinfo=dt.UTC), route="api", ticker=ticker,
        as_of=as_of, target_end=as_of + dt.timedelta(days=7), adapter="a", version="v1", base="llama",
        base_model="m", arm="direct", shadow=False, prompt_hash="0" * 64, raw_text="",
        prediction="U1", predicted_up=True, predicted_mid=0.5, stale_sources="", generated_tokens=0,
    )


def _rows(log: ForecastLog) -> list[ForecastRow]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    with Session(log.engine) as session:
        return list(session.scalars(select(ForecastRow).order_by(ForecastRow.as_of)))


async def test_a_cut_off_answer_gets_its_bin_probed_and_counted(serve: Any, engines: Any) -> None:
    """An answer ended by the token budget before its Prediction line gets one constrained
    request for the bin; the forecast says so, the log stores it, the scorecard and the
    metrics count it apart from parsed answers."""
    async with serve(max_new_tokens=6) as client:
        body = (await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama"})).json()
        card = (await client.get("/v1/adapters/fingpt-llama/scorecard")).json()["versions"][0]
        metrics = (await client.get("/metrics")).text
        row = client.app.state.service.forecast_log.get(body["id"])  # type: ignore[attr-defined]
    assert body["parse_error"] and body["prediction"]["source"] == "probe"
    assert body["raw_text"].startswith("[Positive Developments]") and "Prediction" not in body["raw_text"]
    assert " " + body["prediction"]["text"] in bin_phrases()
    assert row is not None and row.prediction == body["prediction"]["bin"] and row.prediction_source == "probe"
    assert body["finish_reason"] == row.finish_reason == "length"  # cut by the budget, and said so
    assert (card["forecasts"], card["parsed"], card["probed"]) == (1, 0, 1)
    assert 'forecast_probed_total{adapter="fingpt-llama",arm="direct",version="v1"} 1.0' in metrics
    probes = [u for u in engines["llama"].used if u is not None]
    assert probes == ["fingpt-llama@v1", "fingpt-llama@v1"]  # the answer, then its bin probe


async def test_without_probing_a_cut_off_answer_has_no_prediction(serve: Any) -> None:
    async with serve(max_new_tokens=6, probe_unparsed=False) as client:
        body = (await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama"})).json()
        card = (await client.get("/v1/adapters/fingpt-llama/scorecard")).json()["versions"][0]
    assert body["prediction"] is None and body["parse_error"]
    assert (card["forecasts"], card["parsed"], card["probed"], card["parse_failure_rate"]) == (1, 0, 0, 1.0)


async def test_a_failing_probe_leaves_the_answer_without_a_bin_and_is_counted(
    serve: Any, engines: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.engine import EngineError

    real = engines["llama"].generate

    def failing(prompt: str, params: Any, lora: Any, request_id: str) -> Any:
        if params.choices:
            raise EngineError("probe failed")
        return real(prompt, params, lora, request_id)

    monkeypatch.setattr(engines["llama"], "generate", failing)
    async with serve(max_new_tokens=6) as client:
        r = await client.post("/v1/forecast", json={"ticker": "KO", "adapter": "fingpt-llama"})
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 200 and r.json()["prediction"] is None and r.json()["parse_error"]
    assert 'forecast_probe_failures_total{adapter="fingpt-llama",arm="direct",version="v1"} 1.0' in metrics


def test_an_older_log_file_gains_the_new_columns(db_url: str) -> None:
    from sqlalchemy import create_engine, inspect

    url = db_url
    old = create_engine(url)
    with old.begin() as conn:  # the table as it was before prediction_source existed
        cols = ", ".join(
            f"{c.name} {c.type.compile(dialect=old.dialect)}"
            for c in ForecastRow.__table__.columns if c.name != "prediction_source"
        )
        conn.execute(text(f"CREATE TABLE forecasts ({cols})"))
    old.dispose()
    log = ForecastLog(url)
    assert "prediction_source" in {c["name"] for c in inspect(log.engine).get_columns("forecasts")}
    log.add(_row("KO", dt.date(2023, 12, 3)))
    assert log.count() == 1 and log.scorecards("a")[0].parsed == 1
