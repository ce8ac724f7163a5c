"""Alembic's environment: migrate the connection handed over in ``config.attributes``
(:func:`service.migrations.upgrade`), or one opened from ``config.attributes["url"]``
(``python -m service.migrations``). Online mode only."""

from __future__ import annotations

from typing import Any

from alembic import context

from service.forecast_log import Base, make_db_engine
from service.migrations import compare_type

config = context.config
target_metadata = Base.metadata


def run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=compare_type,
        render_as_batch=True,  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = make_db_engine(config.attributes["url"])
    with engine.begin() as conn:
        run(conn)
    engine.dispose()
