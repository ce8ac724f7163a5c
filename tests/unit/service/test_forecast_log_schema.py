"""The forecast log's schema is Alembic's: a new database (SQLite, PostgreSQL) gets head and
matches the models exactly (autogenerate finds nothing to do); logs written by earlier
releases, before migrations existed, are brought to head in place with their rows; replicas
opening one database at once migrate it once; every label the service accepts fits its
column on PostgreSQL, which enforces VARCHAR lengths (SQLite does not)."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from service import migrations
from service.forecast_log import Base, ForecastLog, ForecastRow, new_id
from service.manifest import SEGMENT
from service.migrations import compare_type

# Columns each earlier release lacked (git history of service/forecast_log.py): the first
# release; + prediction_source; + the prompt options (create_all plus the column adder).
RELEASES = {
    "7b050db": {"prediction_source", "weeks", "news_per_week", "with_financials"},
    "3dcd15e": {"weeks", "news_per_week", "with_financials"},
    "prompt-options-without-source": {"prediction_source"},  # what the old adder also mended
}


def _row(ticker: str = "KO", **overrides: object) -> ForecastRow:
    as_of = dt.date(2023, 12, 3)
    fields: dict[str, object] = dict(
        id=new_id(), created_at=dt.datetime(2024, 3, 1, tzinfo=dt.UTC), route="api",
        ticker=ticker, as_of=as_of, target_end=as_of + dt.timedelta(days=7), adapter="a",
        version="v1", base="llama", base_model="m", arm="direct", shadow=False,
        prompt_hash="0" * 64, raw_text="", prediction="U1", predicted_up=True,
        predicted_mid=0.5, stale_sources="", generated_tokens=0,
    )
    fields.update(overrides)
    return ForecastRow(**fields)


def _diff(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": compare_type})
        return list(compare_metadata(context, Base.metadata))


def test_a_new_database_gets_head_and_matches_the_models(any_db_url: str) -> None:
    log = ForecastLog(any_db_url)
    assert migrations.current(log.engine) == migrations.head()
    assert _diff(log.engine) == []  # `alembic revision --autogenerate` would be empty
    log.add(_row())
    reopened = ForecastLog(any_db_url)  # at head already: nothing to do, rows kept
    assert reopened.count() == 1 and migrations.current(reopened.engine) == migrations.head()


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_a_log_from_an_earlier_release_upgrades_and_keeps_its_rows(
    any_db_url: str, release: str
) -> None:
    engine = sa.create_engine(any_db_url)
    old = sa.MetaData()
    sa.Table("forecasts", old, *(
        sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable, index=c.index)
        for c in ForecastRow.__table__.columns if c.name not in RELEASES[release]
    ))  # fmt: skip
    old.create_all(engine)  # as that release's Base.metadata.create_all did
    kept = {c: v for c, v in vars(_row("JPM")).items() if c in old.tables["forecasts"].c}
    with engine.begin() as conn:
        conn.execute(old.tables["forecasts"].insert().values(**kept))
    engine.dispose()

    log = ForecastLog(any_db_url)
    assert migrations.current(log.engine) == migrations.head()
    assert _diff(log.engine) == []
    row = log.get(kept["id"])
    assert row is not None and row.ticker == "JPM" and row.weeks is None
    log.add(_row("KO", weeks=2, prediction_source="probe"))
    assert log.count() == 2 and log.scorecards("a")[0].probed == 1


def test_replicas_opening_one_new_database_at_once_migrate_it_once(any_db_url: str) -> None:
    errors: list[BaseException] = []

    def open_log() -> None:
        try:
            ForecastLog(any_db_url).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_log) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    log = ForecastLog(any_db_url)
    assert migrations.current(log.engine) == migrations.head() and _diff(log.engine) == []


def test_the_longest_names_the_service_accepts_fit(any_db_url: str) -> None:
    """Adapter names, versions and routing arms (arms are adapter names) may be as long as
    ``SEGMENT`` allows; the base model is an HF id or a checkpoint path of any length."""
    longest = "a" * (int(SEGMENT.pattern.split(",")[-1].split("}")[0]) + 1)
    assert SEGMENT.match(longest)
    path = "/models/" + "m" * 400
    row = _row(adapter=longest, version=longest, arm=longest, base_model=path)
    forecast_id = row.id
    log = ForecastLog(any_db_url)
    log.add(row)
    stored = log.get(forecast_id)
    assert stored is not None and (stored.arm, stored.base_model) == (longest, path)


def test_sqlite_migration_lock_lives_beside_the_file(tmp_path: Path) -> None:
    ForecastLog(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    assert (tmp_path / "log.sqlite3.migrate.lock").exists()
