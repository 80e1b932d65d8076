"""The SQL schema as typed ORM classes; Alembic migrations must describe exactly this.

Uniqueness constraints carry the idempotency of at-least-once delivery: replaying a batch hits
them and is skipped by ``ON CONFLICT DO NOTHING`` rather than duplicated.

Every text column is a :class:`StorableString` or :class:`StorableText`: whatever path writes
it, NUL and unpaired surrogates are replaced on the way in (``storage.text``), so no value can
make PostgreSQL or the UTF-8 encoder refuse a row. The DDL is plain VARCHAR and TEXT.
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
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from storage.records import (
    AUDIT_ACTIONS,
    LABEL_STATUSES,
    MAX_ACTOR_CHARS,
    MAX_AUDIT_ACTION_CHARS,
    MAX_AUDIT_ORIGIN_CHARS,
    MAX_AUDIT_TARGET_CHARS,
    MAX_CLASS_CHARS,
    MAX_DETECTOR_CHARS,
    MAX_HOLDER_CHARS,
    MAX_KIND_CHARS,
    MAX_LABEL_CHARS,
    MAX_MODEL_VERSION_CHARS,
    MAX_OFFSET_KEY_CHARS,
    MAX_REASON_CHARS,
    MAX_SINK_CHARS,
    MAX_SOURCE_CHARS,
    MODEL_STATUSES,
    OUTBOX_STATUSES,
    REFERENCE_ORIGINS,
    REFERENCE_STATUSES,
    SEVERITIES,
    STATUSES,
)
from storage.text import storable_text

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


class StorableString(TypeDecorator[str]):
    """VARCHAR(n) that stores NUL and unpaired surrogates as U+FFFD (the same length)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return value if value is None else storable_text(value)


class StorableText(TypeDecorator[str]):
    """TEXT that stores NUL and unpaired surrogates as U+FFFD."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return value if value is None else storable_text(value)


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
    kind: Mapped[str] = mapped_column(StorableString(MAX_KIND_CHARS))
    severity: Mapped[str] = mapped_column(StorableString(16))
    status: Mapped[str] = mapped_column(StorableString(16))
    source: Mapped[str] = mapped_column(StorableString(MAX_SOURCE_CHARS))
    offset_key: Mapped[str] = mapped_column(StorableString(MAX_OFFSET_KEY_CHARS))
    detector: Mapped[str] = mapped_column(StorableString(MAX_DETECTOR_CHARS))
    score: Mapped[float | None] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)
    explanation: Mapped[dict[str, Any]]
    record_excerpt: Mapped[str | None] = mapped_column(StorableText)
    predicted_class: Mapped[str | None] = mapped_column(StorableString(MAX_CLASS_CHARS))
    confidence: Mapped[float | None] = mapped_column(Float)
    analyst_label: Mapped[str | None] = mapped_column(StorableString(MAX_LABEL_CHARS))
    model_version: Mapped[str | None] = mapped_column(StorableString(MAX_MODEL_VERSION_CHARS))
    # Per-record findings are grouped: how many records, and the first and last of them.
    record_count: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    first_offset: Mapped[str | None] = mapped_column(StorableString(MAX_OFFSET_KEY_CHARS))
    last_offset: Mapped[str | None] = mapped_column(StorableString(MAX_OFFSET_KEY_CHARS))


class IncidentRecordRow(Base):
    """An example record of an incident, kept whole so a label on it can teach the model."""

    __tablename__ = "incident_records"
    __table_args__ = (
        UniqueConstraint("incident_id", "offset_key"),
        Index(None, "incident_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    created_at: Mapped[datetime]
    offset_key: Mapped[str] = mapped_column(StorableString(MAX_OFFSET_KEY_CHARS))
    ordinal: Mapped[int] = mapped_column(Integer)
    fields: Mapped[dict[str, Any]]
    textual: Mapped[bool] = mapped_column(Boolean)
    features: Mapped[list[float]] = mapped_column(JSON)
    predicted_class: Mapped[str | None] = mapped_column(StorableString(MAX_CLASS_CHARS))
    confidence: Mapped[float | None] = mapped_column(Float)
    explanation: Mapped[dict[str, Any]]


class LabelRow(Base):
    __tablename__ = "labels"
    __table_args__ = (
        Index(None, "incident_id"),
        Index(None, "status"),
        CheckConstraint(_one_of("status", LABEL_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(StorableString(MAX_LABEL_CHARS))
    actor: Mapped[str] = mapped_column(StorableString(MAX_ACTOR_CHARS))
    note: Mapped[str | None] = mapped_column(StorableText)
    created_at: Mapped[datetime]
    # The example record the label is about (None: a label on a drift or other incident,
    # recorded but with nothing to learn from), and what adaptation made of it.
    incident_record_id: Mapped[int | None] = mapped_column(
        ForeignKey("incident_records.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(StorableString(16), server_default=text("'noted'"))
    status_reason: Mapped[str | None] = mapped_column(StorableText)
    model_version: Mapped[str | None] = mapped_column(StorableString(MAX_MODEL_VERSION_CHARS))
    updated_at: Mapped[datetime | None]


class QuarantineRow(Base):
    __tablename__ = "quarantine"
    __table_args__ = (
        UniqueConstraint("source", "offset_key"),
        Index(None, "created_at"),
        Index(None, "reason"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(StorableString(MAX_SOURCE_CHARS))
    offset_key: Mapped[str] = mapped_column(StorableString(MAX_OFFSET_KEY_CHARS))
    reason: Mapped[str] = mapped_column(StorableString(MAX_REASON_CHARS))
    detail: Mapped[str] = mapped_column(StorableText)
    raw_excerpt: Mapped[str] = mapped_column(StorableText)


class DriftReportRecord(Base):
    __tablename__ = "drift_reports"
    __table_args__ = (
        UniqueConstraint("source", "detector", "window_end_key"),
        Index(None, "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(StorableString(MAX_SOURCE_CHARS))
    detector: Mapped[str] = mapped_column(StorableString(MAX_DETECTOR_CHARS))
    window_end_key: Mapped[str] = mapped_column(StorableString(MAX_OFFSET_KEY_CHARS))
    n_reference: Mapped[int] = mapped_column(Integer)
    n_window: Mapped[int] = mapped_column(Integer)
    statistic: Mapped[float] = mapped_column(Float)
    p_value: Mapped[float] = mapped_column(Float)
    rejected: Mapped[bool] = mapped_column(Boolean)
    features: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    top_features: Mapped[list[str]] = mapped_column(JSON)
    window_span: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


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
        CheckConstraint(_one_of("status", MODEL_STATUSES), name="status"),
    )

    version: Mapped[str] = mapped_column(
        StorableString(MAX_MODEL_VERSION_CHARS), primary_key=True
    )
    created_at: Mapped[datetime]
    algorithm: Mapped[str] = mapped_column(StorableString(100))
    path: Mapped[str] = mapped_column(StorableText)
    sha256: Mapped[str] = mapped_column(StorableString(64))
    metrics: Mapped[dict[str, Any]]
    active: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(StorableString(16), server_default=text("'retired'"))
    parent: Mapped[str | None] = mapped_column(StorableString(MAX_MODEL_VERSION_CHARS))
    base_sha256: Mapped[str | None] = mapped_column(StorableString(64))
    benign_class: Mapped[str | None] = mapped_column(StorableString(MAX_CLASS_CHARS))
    classes: Mapped[list[str] | None] = mapped_column(JSON)
    label_ids: Mapped[list[int] | None] = mapped_column(JSON)
    trigger: Mapped[str | None] = mapped_column(StorableText)
    reasons: Mapped[list[str] | None] = mapped_column(JSON)
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ReferenceVersionRow(Base):
    """One version of what "normal" is for one window detector of one source, or a candidate.

    Versions (``version`` set) form a history per (source, detector) with exactly one
    ``active``; candidates (``version`` NULL) are a drift window's records kept beside its
    incident until an analyst labels it ``benign_drift`` (``approved``) and the agent merges it
    into a new version (``applied``). ``data`` is an npz archive (no pickle) checked against
    ``sha256`` on load.
    """

    __tablename__ = "reference_versions"
    __table_args__ = (
        UniqueConstraint("source", "detector", "version"),
        UniqueConstraint("source", "detector", "incident_key"),
        CheckConstraint(_one_of("status", REFERENCE_STATUSES), name="status"),
        CheckConstraint(_one_of("origin", REFERENCE_ORIGINS), name="origin"),
        Index(None, "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(StorableString(MAX_SOURCE_CHARS))
    detector: Mapped[str] = mapped_column(StorableString(MAX_DETECTOR_CHARS))
    version: Mapped[int | None] = mapped_column(Integer)
    origin: Mapped[str] = mapped_column(StorableString(16))
    status: Mapped[str] = mapped_column(StorableString(16))
    parent: Mapped[int | None] = mapped_column(Integer)
    incident_key: Mapped[str | None] = mapped_column(StorableString(MAX_OFFSET_KEY_CHARS))
    actor: Mapped[str | None] = mapped_column(StorableString(MAX_ACTOR_CHARS))
    note: Mapped[str | None] = mapped_column(StorableText)
    n_records: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(StorableString(64))
    summary: Mapped[dict[str, Any]]
    data: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime | None]


class ModelArtifactRow(Base):
    """Files of a meta-trained learner, so every replica can load the weights a version uses."""

    __tablename__ = "model_artifacts"

    sha256: Mapped[str] = mapped_column(StorableString(64), primary_key=True)
    name: Mapped[str] = mapped_column(StorableString(255), primary_key=True)
    created_at: Mapped[datetime]
    content: Mapped[bytes] = mapped_column(LargeBinary)


class SourceOffsetRow(Base):
    __tablename__ = "source_offsets"

    source: Mapped[str] = mapped_column(StorableString(MAX_SOURCE_CHARS), primary_key=True)
    position: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class AlertOutboxRow(Base):
    """One incident queued for one alert sink: the transactional outbox (``storage.outbox``).

    Written in the transaction that creates the incident, so an incident is never committed
    without its deliveries queued. ``payload`` is the incident as the API showed it at that
    moment; ``delivery_id`` is what a receiver de-duplicates redeliveries by. A worker claims
    rows by setting ``claimed_by`` and ``claimed_until`` (a lease): a crashed worker's rows
    come back when the lease runs out.
    """

    __tablename__ = "alert_outbox"
    __table_args__ = (
        UniqueConstraint("incident_id", "sink"),
        UniqueConstraint("delivery_id"),
        CheckConstraint(_one_of("status", OUTBOX_STATUSES), name="status"),
        # The delivery worker's query: a sink's pending rows in order.
        Index(None, "sink", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[str] = mapped_column(StorableString(36))
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    sink: Mapped[str] = mapped_column(StorableString(MAX_SINK_CHARS))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(StorableString(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(StorableText)
    claimed_by: Mapped[str | None] = mapped_column(StorableString(MAX_HOLDER_CHARS))
    claimed_until: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class AuditLogRow(Base):
    """Who changed what the agent believes, from where: the append-only audit log.

    Written in the transaction of the change it records (``storage.audit``); never updated,
    and never deleted by retention (``Store.purge_older_than``). The database enforces it:
    migration 0007's triggers refuse UPDATE, DELETE and TRUNCATE of this table.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        CheckConstraint(_one_of("action", AUDIT_ACTIONS), name="action"),
        # `metasentry audit` and GET /v1/audit read newest first, filtered by these.
        Index(None, "at"),
        Index(None, "action", "id"),
        Index(None, "actor", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(StorableString(MAX_ACTOR_CHARS))
    action: Mapped[str] = mapped_column(StorableString(MAX_AUDIT_ACTION_CHARS))
    target: Mapped[str] = mapped_column(StorableString(MAX_AUDIT_TARGET_CHARS))
    origin: Mapped[str] = mapped_column(StorableString(MAX_AUDIT_ORIGIN_CHARS))
    detail: Mapped[dict[str, Any]]
