"""Schema migrations of the forecast log (Alembic), applied when the log opens.

Alembic is configured here, in code: no ``alembic.ini`` is needed at run time, and the
scripts travel inside the ``service`` package. To write a new revision after changing
:class:`service.forecast_log.ForecastRow`::

    python -m service.migrations revision -m "what changed" --autogenerate

A log created before migrations existed (``forecasts`` table, no ``alembic_version``) is
stamped at the first revision; the later ones add only the columns it lacks, so a file from
any earlier release upgrades in place and keeps its rows.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, String, inspect, text
from sqlalchemy.engine import Engine

HERE = Path(__file__).resolve().parent
FIRST = "0001_forecasts"  # the table as the first release created it
TABLE = "forecasts"
# One key per database for pg_advisory_xact_lock: replicas starting together migrate in turn.
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"forecast-log-migrations").digest()[:8], "big", signed=True)


def compare_type(
    ctx: Any, inspected_column: Any, metadata_column: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    """Autogenerate's type comparison. SQLite stores every string type as TEXT and enforces no
    length, so two string types are no difference there (a widened VARCHAR needs no copy of
    the table); elsewhere Alembic's own comparison (None)."""
    if ctx.dialect.name == "sqlite" and all(
        isinstance(t, String) for t in (inspected_type, metadata_type)
    ):
        return False
    return None


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code; ``connection`` is the one env.py migrates."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    rev = ScriptDirectory.from_config(config()).get_current_head()
    assert rev is not None
    return rev


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database to head, stamping a pre-migration log first. Safe to call from
    several processes at once (an advisory lock on Postgres, a file lock beside SQLite)."""
    with _exclusive(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        tables = set(inspect(conn).get_table_names())
        cfg = config(conn)
        if TABLE in tables and "alembic_version" not in tables:
            command.stamp(cfg, FIRST)
        command.upgrade(cfg, "head")


@contextmanager
def _exclusive(engine: Engine) -> Iterator[None]:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
