"""The forecasts table as the first release created it.

Revision ID: 0001_forecasts
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_forecasts"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forecasts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("route", sa.String(16), nullable=False),
        sa.Column("ticker", sa.String(16), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("target_end", sa.Date(), nullable=False),
        sa.Column("adapter", sa.String(128), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("base", sa.String(32), nullable=False),
        sa.Column("base_model", sa.String(256), nullable=False),
        sa.Column("arm", sa.String(64), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("prompt_hash", sa.String(64), nullable=False),
        sa.Column("raw_text", sa.Text(), nullable=False),
        sa.Column("prediction", sa.String(4), nullable=True),
        sa.Column("predicted_up", sa.Boolean(), nullable=True),
        sa.Column("predicted_mid", sa.Float(), nullable=True),
        sa.Column("parse_error", sa.Text(), nullable=True),
        sa.Column("stale_sources", sa.String(128), nullable=False),
        sa.Column("prompt_build_s", sa.Float(), nullable=True),
        sa.Column("queue_s", sa.Float(), nullable=True),
        sa.Column("ttft_s", sa.Float(), nullable=True),
        sa.Column("generation_s", sa.Float(), nullable=True),
        sa.Column("total_s", sa.Float(), nullable=True),
        sa.Column("generated_tokens", sa.Integer(), nullable=False),
        sa.Column("realized_return", sa.Float(), nullable=True),
        sa.Column("realized_bin", sa.String(4), nullable=True),
        sa.Column("realized_up", sa.Boolean(), nullable=True),
        sa.Column("realized_mid", sa.Float(), nullable=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=True),
    )
    for column in ("created_at", "ticker", "target_end", "adapter"):
        op.create_index(f"ix_forecasts_{column}", "forecasts", [column])


def downgrade() -> None:
    op.drop_table("forecasts")
