"""The SQL schema as typed ORM classes; Alembic migrations must describe exactly this.

Uniqueness constraints carry the idempotency of at-least-once delivery: replaying a batch hits
them and is skipped by ``ON CONFLICT DO NOTHING`` rather than duplicated.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from storage.records import (
    MAX_ACTOR_CHARS,
    MAX_CLASS_CHARS,
    MAX_DETECTOR_CHARS,
    MAX_KIND_CHARS,
    MAX_LABEL_CHARS,
    MAX_MODEL_VERSION_CHARS,
    MAX_OFFSET_KEY_CHARS,
    MAX_REASON_CHARS,
    MAX_SOURCE_CHARS,
    SEVERITIES,
    STATUSES,
)

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on every backend.

    SQLite has no timestamp type and drops the offset, so values are normalised to UTC before
    they are written and re-labelled as UTC when read; PostgreSQL's ``timestamptz`` keeps the
    instant and is converted to UTC for uniform output.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"timestamps must be timezone-aware, got naive {value.isoformat()}.")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _one_of(column: str, allowed: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{item}'" for item in allowed)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON()}


class IncidentRow(Base):
    __tablename__ = "incidents"
    __table_args__ = (
        UniqueConstraint("source", "offset_key", "detector"),
        CheckConstraint(_one_of("severity", SEVERITIES), name="severity"),
        CheckConstraint(_one_of("status", STATUSES), name="status"),
        Index(None, "created_at"),
        Index(None, "kind"),
        Index(None, "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(MAX_KIND_CHARS))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(MAX_SOURCE_CHARS))
    offset_key: Mapped[str] = mapped_column(String(MAX_OFFSET_KEY_CHARS))
    detector: Mapped[str] = mapped_column(String(MAX_DETECTOR_CHARS))
    score: Mapped[float | None] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)
    explanation: Mapped[dict[str, Any]]
    record_excerpt: Mapped[str | None] = mapped_column(Text)
    predicted_class: Mapped[str | None] = mapped_column(String(MAX_CLASS_CHARS))
    confidence: Mapped[float | None] = mapped_column(Float)
    analyst_label: Mapped[str | None] = mapped_column(String(MAX_LABEL_CHARS))
    model_version: Mapped[str | None] = mapped_column(String(MAX_MODEL_VERSION_CHARS))


class LabelRow(Base):
    __tablename__ = "labels"
    __table_args__ = (Index(None, "incident_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(MAX_LABEL_CHARS))
    actor: Mapped[str] = mapped_column(String(MAX_ACTOR_CHARS))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class QuarantineRow(Base):
    __tablename__ = "quarantine"
    __table_args__ = (
        UniqueConstraint("source", "offset_key"),
        Index(None, "created_at"),
        Index(None, "reason"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(MAX_SOURCE_CHARS))
    offset_key: Mapped[str] = mapped_column(String(MAX_OFFSET_KEY_CHARS))
    reason: Mapped[str] = mapped_column(String(MAX_REASON_CHARS))
    detail: Mapped[str] = mapped_column(Text)
    raw_excerpt: Mapped[str] = mapped_column(Text)


class DriftReportRecord(Base):
    __tablename__ = "drift_reports"
    __table_args__ = (
        UniqueConstraint("source", "detector", "window_end_key"),
        Index(None, "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(MAX_SOURCE_CHARS))
    detector: Mapped[str] = mapped_column(String(MAX_DETECTOR_CHARS))
    window_end_key: Mapped[str] = mapped_column(String(MAX_OFFSET_KEY_CHARS))
    n_reference: Mapped[int] = mapped_column(Integer)
    n_window: Mapped[int] = mapped_column(Integer)
    statistic: Mapped[float] = mapped_column(Float)
    p_value: Mapped[float] = mapped_column(Float)
    rejected: Mapped[bool] = mapped_column(Boolean)
    features: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    top_features: Mapped[list[str]] = mapped_column(JSON)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        # At most one active version, enforced by the database so that two replicas activating
        # at once cannot both win.
        Index(
            "uq_model_versions_one_active",
            "active",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )

    version: Mapped[str] = mapped_column(String(MAX_MODEL_VERSION_CHARS), primary_key=True)
    created_at: Mapped[datetime]
    algorithm: Mapped[str] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]]
    active: Mapped[bool] = mapped_column(Boolean)


class SourceOffsetRow(Base):
    __tablename__ = "source_offsets"

    source: Mapped[str] = mapped_column(String(MAX_SOURCE_CHARS), primary_key=True)
    position: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]
