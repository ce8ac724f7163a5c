"""Adding nullable columns that a log from before migrations may already have: such a file is
stamped at the first revision whatever release wrote it (the old start-up code added missing
columns one by one), so a revision that adds columns skips those already there."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def add_missing(table: str, *columns: sa.Column[object]) -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}
    missing = [c for c in columns if c.name not in have]
    if missing:
        with op.batch_alter_table(table) as batch:
            for column in missing:
                batch.add_column(column)


def drop(table: str, *names: str) -> None:
    with op.batch_alter_table(table) as batch:
        for name in names:
            batch.drop_column(name)
