"""The alert outbox: each incident queued for each alert sink that wants it, written in the
transaction that creates the incident, and drained by the delivery worker.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = "status IN ('pending', 'delivered', 'failed')"


def upgrade() -> None:
    op.create_table(
        "alert_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("sink", sa.String(length=100), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_outbox")),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"],
                                name=op.f("fk_alert_outbox_incident_id_incidents"),
                                ondelete="CASCADE"),
        sa.UniqueConstraint("incident_id", "sink", name=op.f("uq_alert_outbox_incident_id_sink")),
        sa.UniqueConstraint("delivery_id", name=op.f("uq_alert_outbox_delivery_id")),
        sa.CheckConstraint(_STATUSES, name=op.f("ck_alert_outbox_status")),
    )
    op.create_index(op.f("ix_alert_outbox_sink_status_id"), "alert_outbox",
                    ["sink", "status", "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_alert_outbox_sink_status_id"), table_name="alert_outbox")
    op.drop_table("alert_outbox")
