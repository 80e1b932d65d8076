"""The live model: grouped incidents, example records, label statuses, a full model registry.

- ``incidents``: ``record_count``, ``first_offset``, ``last_offset`` (per-record findings are
  grouped, a burst is one incident with a count);
- ``incident_records``: example records of an incident, kept whole (parsed fields and encoded
  features) so a label on the incident becomes support examples;
- ``labels``: the record a label is about, its status through screening and adaptation and
  the version that used it (existing labels had no record: they become ``noted``);
- ``model_versions``: status, parent, base weights, benign class, classes, the labels enrolled,
  trigger and rejection reasons (existing versions become ``active`` or ``retired``);
- ``model_artifacts``: the files of meta-trained weights, so every replica can load them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LABEL_STATUSES = "status IN ('pending', 'held', 'released', 'used', 'rejected', 'noted')"
_MODEL_STATUSES = "status IN ('candidate', 'active', 'rejected', 'retired')"


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("record_count", sa.Integer(), nullable=False,
                                   server_default=sa.text("1")))
        batch.add_column(sa.Column("first_offset", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("last_offset", sa.String(length=255), nullable=True))

    op.create_table(
        "incident_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("offset_key", sa.String(length=255), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("textual", sa.Boolean(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("predicted_class", sa.String(length=100), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("explanation", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_records")),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"],
                                name=op.f("fk_incident_records_incident_id_incidents"),
                                ondelete="CASCADE"),
        sa.UniqueConstraint("incident_id", "offset_key",
                            name=op.f("uq_incident_records_incident_id_offset_key")),
    )
    op.create_index(op.f("ix_incident_records_incident_id"), "incident_records", ["incident_id"])

    with op.batch_alter_table("labels") as batch:
        batch.add_column(sa.Column("incident_record_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("status", sa.String(length=16), nullable=False,
                                   server_default=sa.text("'noted'")))
        batch.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("model_version", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key(op.f("fk_labels_incident_record_id_incident_records"),
                                 "incident_records", ["incident_record_id"], ["id"],
                                 ondelete="CASCADE")
        batch.create_check_constraint(op.f("ck_labels_status"), _LABEL_STATUSES)
        batch.create_index(op.f("ix_labels_status"), ["status"])

    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("status", sa.String(length=16), nullable=False,
                                   server_default=sa.text("'retired'")))
        batch.add_column(sa.Column("parent", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("base_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("benign_class", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("classes", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("label_ids", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("trigger", sa.Text(), nullable=True))
        batch.add_column(sa.Column("reasons", sa.JSON(), nullable=True))
        batch.create_check_constraint(op.f("ck_model_versions_status"), _MODEL_STATUSES)
    op.execute("UPDATE model_versions SET status = 'active' WHERE active")

    op.create_table(
        "model_artifacts",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", "name", name=op.f("pk_model_artifacts")),
    )


def downgrade() -> None:
    op.drop_table("model_artifacts")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint(op.f("ck_model_versions_status"), type_="check")
        for column in ("reasons", "trigger", "label_ids", "classes", "benign_class",
                       "base_sha256", "parent", "status"):
            batch.drop_column(column)
    with op.batch_alter_table("labels") as batch:
        batch.drop_index(op.f("ix_labels_status"))
        batch.drop_constraint(op.f("ck_labels_status"), type_="check")
        batch.drop_constraint(op.f("fk_labels_incident_record_id_incident_records"),
                              type_="foreignkey")
        for column in ("updated_at", "model_version", "status_reason", "status",
                       "incident_record_id"):
            batch.drop_column(column)
    op.drop_index(op.f("ix_incident_records_incident_id"), table_name="incident_records")
    op.drop_table("incident_records")
    with op.batch_alter_table("incidents") as batch:
        for column in ("last_offset", "first_offset", "record_count"):
            batch.drop_column(column)
