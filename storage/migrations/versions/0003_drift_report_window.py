"""Drift reports name the records their window held (``window_span``: first and last offset key,
and first and last id and timestamp when the schema names them), as drift incidents already
did; reports stored before this revision have none.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("drift_reports") as batch:
        batch.add_column(sa.Column("window_span", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("drift_reports") as batch:
        batch.drop_column("window_span")
