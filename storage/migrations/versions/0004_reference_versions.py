"""Reference versions: what "normal" is per source and window detector, as a recorded history
(initial, rolling, approved benign drift, rollback), and drift windows kept as candidates until
an analyst approves them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = ("status IN ('active', 'superseded', 'pruned', 'candidate', 'approved', "
             "'applied')")
_ORIGINS = "origin IN ('initial', 'rolling', 'approved', 'rollback', 'window')"


def upgrade() -> None:
    op.create_table(
        "reference_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("detector", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("parent", sa.Integer(), nullable=True),
        sa.Column("incident_key", sa.String(length=255), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("n_records", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_versions")),
        sa.UniqueConstraint("source", "detector", "version",
                            name=op.f("uq_reference_versions_source_detector_version")),
        sa.UniqueConstraint("source", "detector", "incident_key",
                            name=op.f("uq_reference_versions_source_detector_incident_key")),
        sa.CheckConstraint(_STATUSES, name=op.f("ck_reference_versions_status")),
        sa.CheckConstraint(_ORIGINS, name=op.f("ck_reference_versions_origin")),
    )
    op.create_index(op.f("ix_reference_versions_status"), "reference_versions", ["status"])


def downgrade() -> None:
    op.drop_index(op.f("ix_reference_versions_status"), table_name="reference_versions")
    op.drop_table("reference_versions")
