"""Model versions record the settings that shape their answers (``settings``).

A version is rebuilt from its recorded inputs whenever a process serves it. The classifier's
``model.min_class_calibration`` and ``model.min_reference_records_to_name`` change what the
rebuilt model answers, so they are recorded with the version (and covered by its sha256):
every process rebuilds the model its canary check passed, and a changed setting makes a new
version, checked like any other, instead of changing one in place. Versions registered before
keep NULL here and are served with the configured values.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 22:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("settings", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("settings")
