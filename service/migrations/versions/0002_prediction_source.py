"""Where the predicted bin came from: the answer's line, its prose, or a probe.

Revision ID: 0002_prediction_source
Revises: 0001_forecasts
"""

from __future__ import annotations

import sqlalchemy as sa

from service.migrations.ops import add_missing, drop

revision = "0002_prediction_source"
down_revision = "0001_forecasts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_missing("forecasts", sa.Column("prediction_source", sa.String(8), nullable=True))


def downgrade() -> None:
    drop("forecasts", "prediction_source")
