"""Initial schema: incidents, labels, quarantine, drift reports, model versions, offsets.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("offset_key", sa.String(length=255), nullable=False),
        sa.Column("detector", sa.String(length=100), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("p_value", sa.Float(), nullable=True),
        sa.Column("explanation", sa.JSON(), nullable=False),
        sa.Column("record_excerpt", sa.Text(), nullable=True),
        sa.Column("predicted_class", sa.String(length=100), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("analyst_label", sa.String(length=100), nullable=True),
        sa.Column("model_version", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
        sa.UniqueConstraint(
            "source", "offset_key", "detector", name=op.f("uq_incidents_source_offset_key_detector")
        ),
        sa.CheckConstraint(
            "severity IN ('info', 'low', 'medium', 'high', 'critical')",
            name=op.f("ck_incidents_severity"),
        ),
        sa.CheckConstraint(
            "status IN ('open', 'labelled', 'dismissed', 'resolved')",
            name=op.f("ck_incidents_status"),
        ),
    )
    op.create_index(op.f("ix_incidents_created_at"), "incidents", ["created_at"])
    op.create_index(op.f("ix_incidents_kind"), "incidents", ["kind"])
    op.create_index(op.f("ix_incidents_status"), "incidents", ["status"])

    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labels")),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_labels_incident_id_incidents"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(op.f("ix_labels_incident_id"), "labels", ["incident_id"])

    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("offset_key", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("raw_excerpt", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
        sa.UniqueConstraint("source", "offset_key", name=op.f("uq_quarantine_source_offset_key")),
    )
    op.create_index(op.f("ix_quarantine_created_at"), "quarantine", ["created_at"])
    op.create_index(op.f("ix_quarantine_reason"), "quarantine", ["reason"])

    op.create_table(
        "drift_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("detector", sa.String(length=100), nullable=False),
        sa.Column("window_end_key", sa.String(length=255), nullable=False),
        sa.Column("n_reference", sa.Integer(), nullable=False),
        sa.Column("n_window", sa.Integer(), nullable=False),
        sa.Column("statistic", sa.Float(), nullable=False),
        sa.Column("p_value", sa.Float(), nullable=False),
        sa.Column("rejected", sa.Boolean(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("top_features", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_reports")),
        sa.UniqueConstraint(
            "source",
            "detector",
            "window_end_key",
            name=op.f("uq_drift_reports_source_detector_window_end_key"),
        ),
    )
    op.create_index(op.f("ix_drift_reports_created_at"), "drift_reports", ["created_at"])

    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(length=100), nullable=False),
        _timestamp("created_at"),
        sa.Column("algorithm", sa.String(length=100), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_model_versions")),
    )
    op.create_index(
        "uq_model_versions_one_active",
        "model_versions",
        ["active"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )

    op.create_table(
        "source_offsets",
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("position", sa.JSON(), nullable=False),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_source_offsets")),
    )


def downgrade() -> None:
    op.drop_table("source_offsets")
    op.drop_index("uq_model_versions_one_active", table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_index(op.f("ix_drift_reports_created_at"), table_name="drift_reports")
    op.drop_table("drift_reports")
    op.drop_index(op.f("ix_quarantine_reason"), table_name="quarantine")
    op.drop_index(op.f("ix_quarantine_created_at"), table_name="quarantine")
    op.drop_table("quarantine")
    op.drop_index(op.f("ix_labels_incident_id"), table_name="labels")
    op.drop_table("labels")
    op.drop_index(op.f("ix_incidents_status"), table_name="incidents")
    op.drop_index(op.f("ix_incidents_kind"), table_name="incidents")
    op.drop_index(op.f("ix_incidents_created_at"), table_name="incidents")
    op.drop_table("incidents")
