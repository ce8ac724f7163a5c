"""Fixtures shared by every test directory: the forecast-log database, SQLite by default and
a real PostgreSQL server where a test asks for both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.ci import missing
from support.postgres import PostgresCluster, PostgresUnavailable

DATABASES = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole run (installed by apt-get if missing)."""
    try:
        with PostgresCluster.start() as cluster:
            yield cluster
    except PostgresUnavailable as exc:
        missing(f"PostgreSQL (Debian postgresql, `make system-deps`): {exc}")


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """The forecast log's URL: a SQLite file, as shipped. A module that runs on both backends
    overrides it with a ``db_url`` fixture that returns ``any_db_url``."""
    return f"sqlite:///{tmp_path / 'forecasts.sqlite3'}"


@pytest.fixture(params=DATABASES)
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The forecast log's URL on each backend in turn: a SQLite file, then a fresh database
    on the throwaway PostgreSQL cluster."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'forecasts.sqlite3'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    with cluster.database() as url:
        yield url
