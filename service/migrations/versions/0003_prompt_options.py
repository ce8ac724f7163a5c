"""The prompt options of each forecast (NULL on rows written before they existed).

Revision ID: 0003_prompt_options
Revises: 0002_prediction_source
"""

from __future__ import annotations

import sqlalchemy as sa

from service.migrations.ops import add_missing, drop

revision = "0003_prompt_options"
down_revision = "0002_prediction_source"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_missing(
        "forecasts",
        sa.Column("weeks", sa.Integer(), nullable=True),
        sa.Column("news_per_week", sa.Integer(), nullable=True),
        sa.Column("with_financials", sa.Boolean(), nullable=True),
    )


def downgrade() -> None:
    drop("forecasts", "weeks", "news_per_week", "with_financials")
