"""Room for every label the service accepts: a routing arm is an adapter name (up to 128
characters, ``manifest.SEGMENT``), the base model an HF id or a checkpoint path of any length.
PostgreSQL refused such rows (VARCHAR(64) and (256)); SQLite never enforced the lengths, so
its table is left as it is (no copy of the whole log at start).

Revision ID: 0004_wider_labels
Revises: 0003_prompt_options
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_wider_labels"
down_revision = "0003_prompt_options"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column("forecasts", "arm", type_=sa.String(128), existing_nullable=False)
    op.alter_column("forecasts", "base_model", type_=sa.Text(), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column("forecasts", "base_model", type_=sa.String(256), existing_nullable=False)
    op.alter_column("forecasts", "arm", type_=sa.String(64), existing_nullable=False)
