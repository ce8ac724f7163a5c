"""Why each answer's generation ended (the engine's finish reason): an answer that stopped
short of its expression can be told from one cut at its token budget or aborted.

Revision ID: 0005_finish_reason
Revises: 0004_wider_labels
"""

from __future__ import annotations

import sqlalchemy as sa

from service.migrations.ops import add_missing, drop

revision = "0005_finish_reason"
down_revision = "0004_wider_labels"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_missing("forecasts", sa.Column("finish_reason", sa.String(16), nullable=True))


def downgrade() -> None:
    drop("forecasts", "finish_reason")
