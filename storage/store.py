"""The incident store: one engine, short transactions, safe to share between threads.

Every public method opens its own transaction and returns frozen records, so the pipeline
thread, API threads and scheduler jobs can share one ``Store`` without locks of their own.
Connection-level failures surface as :class:`StoreUnavailable` (retry with backoff); every
other error is a bug or bad data and propagates unchanged, after the transaction rolled back.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from alembic import command
from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Insert,
    Table,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from storage.engine import create_store_engine, parse_store_url
from storage.migrations import alembic_config, current_revision, head_revision
from storage.models import Base
from storage.records import (
    MAX_ACTOR_CHARS,
    MAX_EXCERPT_CHARS,
    MAX_LABEL_CHARS,
    MAX_MODEL_VERSION_CHARS,
    MAX_SOURCE_CHARS,
    STATUSES,
    CommitResult,
    DriftReportRow,
    Incident,
    IncidentNotFound,
    Label,
    ModelVersion,
    ModelVersionNotFound,
    NewDriftReport,
    NewIncident,
    QuarantinedRecord,
    QuarantineEntry,
    StoreUnavailable,
    require_text,
)

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 10_000
# Any constant works; it only has to be the same for every replica migrating one database.
_MIGRATION_LOCK_KEY = 0x4D535452  # "MSTR"
_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")

_INCIDENTS: Table = Base.metadata.tables["incidents"]
_LABELS: Table = Base.metadata.tables["labels"]
_QUARANTINE: Table = Base.metadata.tables["quarantine"]
_DRIFT_REPORTS: Table = Base.metadata.tables["drift_reports"]
_MODEL_VERSIONS: Table = Base.metadata.tables["model_versions"]
_SOURCE_OFFSETS: Table = Base.metadata.tables["source_offsets"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _truncate(value: str | None, max_chars: int = MAX_EXCERPT_CHARS) -> str | None:
    return None if value is None else value[:max_chars]


def _require_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}.")


def _require_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {list(STATUSES)}, got {status!r}.")


def _incident_values(incident: NewIncident, now: datetime) -> dict[str, Any]:
    return {
        "created_at": incident.created_at or now,
        "updated_at": now,
        "kind": incident.kind,
        "severity": incident.severity,
        "status": "open",
        "source": incident.source,
        "offset_key": incident.offset_key,
        "detector": incident.detector,
        "score": incident.score,
        "p_value": incident.p_value,
        "explanation": dict(incident.explanation),
        "record_excerpt": _truncate(incident.record_excerpt),
        "predicted_class": incident.predicted_class,
        "confidence": incident.confidence,
        "analyst_label": None,
        "model_version": incident.model_version,
    }


def _quarantine_values(record: QuarantinedRecord, now: datetime) -> dict[str, Any]:
    return {
        "created_at": now,
        "source": record.source,
        "offset_key": record.offset_key,
        "reason": record.reason,
        "detail": _truncate(record.detail),
        "raw_excerpt": _truncate(record.raw_excerpt),
    }


def _drift_report_values(report: NewDriftReport, now: datetime) -> dict[str, Any]:
    return {
        "created_at": report.created_at or now,
        "source": report.source,
        "detector": report.detector,
        "window_end_key": report.window_end_key,
        "n_reference": report.n_reference,
        "n_window": report.n_window,
        "statistic": report.statistic,
        "p_value": report.p_value,
        "rejected": report.rejected,
        "features": [dict(feature) for feature in report.features],
        "top_features": list(report.top_features),
    }


class Store:
    """SQL persistence for incidents, labels, quarantine, drift reports, offsets and models.

    Parameters
    ----------
    url
        ``sqlite:///path/to/metasentry.db`` (the parent directory is created) or
        ``postgresql+psycopg://user@host/db``. Nothing connects until the first call, so a
        store can be built while the database is still starting.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from storage import NewIncident, Store
    >>> store = Store(f"sqlite:///{pathlib.Path(tempfile.mkdtemp()) / 'doc.db'}")
    >>> store.upgrade()
    >>> batch = [NewIncident(kind="drift", severity="high", source="s", offset_key="1",
    ...                      detector="mmd")]
    >>> store.commit_batch(source="s", position={"offset": 1}, incidents=batch).incidents_created
    1
    >>> store.commit_batch(source="s", position={"offset": 1}, incidents=batch).incidents_duplicate
    1
    >>> store.close()
    """

    def __init__(self, url: str) -> None:
        self._url = parse_store_url(url)
        self._engine = create_store_engine(self._url)
        self._dialect_insert: Callable[[Table], Insert] = (
            postgresql.insert if self.dialect == "postgresql" else sqlite.insert  # type: ignore[assignment]
        )
        logger.info("store opened at %s", self.redacted_url)

    # ------------------------------------------------------------------ identity and schema

    @property
    def redacted_url(self) -> str:
        """The URL with any password replaced by ``***``: safe for logs and status pages."""
        return self._url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._url.get_backend_name()

    def upgrade(self) -> None:
        """Migrate the schema to the newest revision shipped with this package."""
        with self._translate_errors("upgrade"), self._engine.begin() as connection:
            if self.dialect == "postgresql":
                # Replicas starting together must not race to create the same tables.
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            before = current_revision(connection)
            command.upgrade(alembic_config(connection), "head")
            after = current_revision(connection)
        if before != after:
            logger.info("store schema upgraded from %s to %s", before, after)

    def current_revision(self) -> str | None:
        """The database's schema revision, or None before the first :meth:`upgrade`."""
        with self._translate_errors("current_revision"), self._engine.connect() as connection:
            return current_revision(connection)

    def head_revision(self) -> str:
        """The newest schema revision this package knows."""
        return head_revision()

    def at_head(self) -> bool:
        """True when the schema needs no upgrade."""
        return self.current_revision() == self.head_revision()

    def ping(self) -> bool:
        """Whether the database answers right now (for readiness probes)."""
        try:
            with self._engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as error:
            logger.warning("store at %s does not answer: %s", self.redacted_url, error)
            return False
        return True

    # ------------------------------------------------------------------ the hot path

    def commit_batch(
        self,
        *,
        source: str,
        position: Mapping[str, Any] | None,
        incidents: Sequence[NewIncident] = (),
        quarantine: Sequence[QuarantinedRecord] = (),
        drift_reports: Sequence[NewDriftReport] = (),
    ) -> CommitResult:
        """Record everything one batch produced, and where the source got to, atomically.

        Replays are harmless: incidents already stored under (source, offset_key, detector),
        quarantined records under (source, offset_key) and drift reports under (source,
        detector, window_end_key) are skipped and counted as duplicates. ``position=None``
        leaves the saved source position untouched.
        """
        require_text("source", source, MAX_SOURCE_CHARS)
        now = _utcnow()
        incident_rows = [_incident_values(item, now) for item in incidents]
        quarantine_rows = [_quarantine_values(item, now) for item in quarantine]
        drift_rows = [_drift_report_values(item, now) for item in drift_reports]
        with self._translate_errors("commit_batch"), self._engine.begin() as connection:
            created_ids = self._insert_new(
                connection, _INCIDENTS, incident_rows, ("source", "offset_key", "detector")
            )
            quarantined = self._insert_new(
                connection, _QUARANTINE, quarantine_rows, ("source", "offset_key")
            )
            drift_ids = self._insert_new(
                connection, _DRIFT_REPORTS, drift_rows, ("source", "detector", "window_end_key")
            )
            if position is not None:
                self._save_position(connection, source, position, now)
        return CommitResult(
            incidents_created=len(created_ids),
            incidents_duplicate=len(incident_rows) - len(created_ids),
            quarantined=len(quarantined),
            drift_reports=len(drift_ids),
            created_ids=tuple(created_ids),
        )

    def _insert_new(
        self,
        connection: Connection,
        table: Table,
        rows: list[dict[str, Any]],
        unique_columns: tuple[str, ...],
    ) -> list[int]:
        """Insert rows whose unique key is new, in one executemany; return the new ids."""
        if not rows:
            return []
        statement = (
            self._dialect_insert(table)
            .on_conflict_do_nothing(index_elements=list(unique_columns))  # type: ignore[attr-defined]
            .returning(table.c.id)
        )
        return list(connection.execute(statement, rows).scalars())

    def _save_position(
        self, connection: Connection, source: str, position: Mapping[str, Any], now: datetime
    ) -> None:
        statement = self._dialect_insert(_SOURCE_OFFSETS).values(
            source=source, position=dict(position), updated_at=now
        )
        statement = statement.on_conflict_do_update(  # type: ignore[attr-defined]
            index_elements=["source"],
            set_={
                "position": statement.excluded.position,  # type: ignore[attr-defined]
                "updated_at": statement.excluded.updated_at,  # type: ignore[attr-defined]
            },
        )
        connection.execute(statement)

    def load_position(self, source: str) -> dict[str, Any] | None:
        """The position last committed for ``source``, or None if it never committed."""
        query = select(_SOURCE_OFFSETS.c.position).where(_SOURCE_OFFSETS.c.source == source)
        with self._translate_errors("load_position"), self._engine.connect() as connection:
            position = connection.execute(query).scalar_one_or_none()
        return None if position is None else dict(position)

    # ------------------------------------------------------------------ incidents and labels

    def get_incident(self, incident_id: int) -> Incident:
        with self._translate_errors("get_incident"), self._engine.connect() as connection:
            return self._fetch_incident(connection, incident_id)

    def list_incidents(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        source: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[Incident]:
        """Newest first; pass the last id of a page as ``before_id`` to get the next page."""
        _require_limit(limit)
        if status is not None:
            _require_status(status)
        conditions: list[ColumnElement[bool]] = []
        if kind is not None:
            conditions.append(_INCIDENTS.c.kind == kind)
        if status is not None:
            conditions.append(_INCIDENTS.c.status == status)
        if source is not None:
            conditions.append(_INCIDENTS.c.source == source)
        if before_id is not None:
            conditions.append(_INCIDENTS.c.id < before_id)
        query = select(_INCIDENTS).where(*conditions).order_by(_INCIDENTS.c.id.desc()).limit(limit)
        with self._translate_errors("list_incidents"), self._engine.connect() as connection:
            return [Incident(**row._asdict()) for row in connection.execute(query)]

    def count_incidents(self) -> dict[str, int]:
        """Number of stored incidents per kind."""
        return self._count_by(_INCIDENTS.c.kind, "count_incidents")

    def label_incident(
        self, incident_id: int, label: str, *, actor: str, note: str | None = None
    ) -> Incident:
        """Record an analyst's label; the incident becomes ``labelled`` and feeds adaptation."""
        require_text("label", label, MAX_LABEL_CHARS)
        require_text("actor", actor, MAX_ACTOR_CHARS)
        now = _utcnow()
        with self._translate_errors("label_incident"), self._engine.begin() as connection:
            # Writing first takes SQLite's write lock up front, so concurrent labellers queue
            # on busy_timeout instead of failing to upgrade a read lock.
            self._update_incident(
                connection, incident_id, analyst_label=label, status="labelled", updated_at=now
            )
            connection.execute(
                _LABELS.insert().values(
                    incident_id=incident_id, label=label, actor=actor, note=note, created_at=now
                )
            )
            return self._fetch_incident(connection, incident_id)

    def set_status(self, incident_id: int, status: str) -> Incident:
        """Move an incident through triage (``open``, ``labelled``, ``dismissed``, ``resolved``)."""
        _require_status(status)
        with self._translate_errors("set_status"), self._engine.begin() as connection:
            self._update_incident(connection, incident_id, status=status, updated_at=_utcnow())
            return self._fetch_incident(connection, incident_id)

    def list_labels(self, *, limit: int = 1000, since_id: int | None = None) -> list[Label]:
        """Labels in the order they were given; ``since_id`` resumes after a seen label."""
        _require_limit(limit)
        query = select(_LABELS).order_by(_LABELS.c.id).limit(limit)
        if since_id is not None:
            query = query.where(_LABELS.c.id > since_id)
        with self._translate_errors("list_labels"), self._engine.connect() as connection:
            return [Label(**row._asdict()) for row in connection.execute(query)]

    def _update_incident(self, connection: Connection, incident_id: int, **values: Any) -> None:
        statement = update(_INCIDENTS).where(_INCIDENTS.c.id == incident_id).values(**values)
        if connection.execute(statement).rowcount == 0:
            raise IncidentNotFound(incident_id)

    @staticmethod
    def _fetch_incident(connection: Connection, incident_id: int) -> Incident:
        query = select(_INCIDENTS).where(_INCIDENTS.c.id == incident_id)
        row = connection.execute(query).one_or_none()
        if row is None:
            raise IncidentNotFound(incident_id)
        return Incident(**row._asdict())

    # ------------------------------------------------------------------ quarantine and drift

    def list_quarantine(
        self, *, source: str | None = None, limit: int = 50
    ) -> list[QuarantineEntry]:
        """Newest quarantined records first."""
        _require_limit(limit)
        query = select(_QUARANTINE).order_by(_QUARANTINE.c.id.desc()).limit(limit)
        if source is not None:
            query = query.where(_QUARANTINE.c.source == source)
        with self._translate_errors("list_quarantine"), self._engine.connect() as connection:
            return [QuarantineEntry(**row._asdict()) for row in connection.execute(query)]

    def count_quarantine(self) -> dict[str, int]:
        """Number of quarantined records per reason."""
        return self._count_by(_QUARANTINE.c.reason, "count_quarantine")

    def list_drift_reports(
        self, *, source: str | None = None, detector: str | None = None, limit: int = 50
    ) -> list[DriftReportRow]:
        """Newest drift reports first."""
        _require_limit(limit)
        query = select(_DRIFT_REPORTS).order_by(_DRIFT_REPORTS.c.id.desc()).limit(limit)
        if source is not None:
            query = query.where(_DRIFT_REPORTS.c.source == source)
        if detector is not None:
            query = query.where(_DRIFT_REPORTS.c.detector == detector)
        with self._translate_errors("list_drift_reports"), self._engine.connect() as connection:
            return [DriftReportRow(**row._asdict()) for row in connection.execute(query)]

    def _count_by(self, column: Column[str], action: str) -> dict[str, int]:
        query = select(column, func.count()).group_by(column)
        with self._translate_errors(action), self._engine.connect() as connection:
            return {key: count for key, count in connection.execute(query)}

    # ------------------------------------------------------------------ model registry

    def add_model_version(
        self,
        *,
        version: str,
        algorithm: str,
        path: str,
        sha256: str,
        metrics: Mapping[str, Any],
        activate: bool = False,
    ) -> ModelVersion:
        """Register a trained model; with ``activate`` it also becomes the one in service."""
        require_text("version", version, MAX_MODEL_VERSION_CHARS)
        require_text("algorithm", algorithm, 100)
        require_text("path", path, 4096)
        if not _SHA256_PATTERN.fullmatch(sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {sha256!r}.")
        values = {
            "version": version,
            "created_at": _utcnow(),
            "algorithm": algorithm,
            "path": path,
            "sha256": sha256,
            "metrics": dict(metrics),
            "active": False,
        }
        with self._translate_errors("add_model_version"), self._engine.begin() as connection:
            self._lock_registry(connection)
            try:
                connection.execute(_MODEL_VERSIONS.insert().values(**values))
            except IntegrityError:
                raise ValueError(f"model version {version!r} is already registered.") from None
            if activate:
                self._activate(connection, version)
            return self._fetch_model_version(connection, version)

    def activate_model_version(self, version: str) -> ModelVersion:
        """Make ``version`` the only active model, in one transaction."""
        with self._translate_errors("activate_model_version"), self._engine.begin() as connection:
            self._lock_registry(connection)
            self._activate(connection, version)
            return self._fetch_model_version(connection, version)

    def active_model_version(self) -> ModelVersion | None:
        query = select(_MODEL_VERSIONS).where(_MODEL_VERSIONS.c.active.is_(True))
        with self._translate_errors("active_model_version"), self._engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else ModelVersion(**row._asdict())

    def list_model_versions(self) -> list[ModelVersion]:
        """Newest registration first."""
        query = select(_MODEL_VERSIONS).order_by(
            _MODEL_VERSIONS.c.created_at.desc(), _MODEL_VERSIONS.c.version.desc()
        )
        with self._translate_errors("list_model_versions"), self._engine.connect() as connection:
            return [ModelVersion(**row._asdict()) for row in connection.execute(query)]

    def _lock_registry(self, connection: Connection) -> None:
        """Serialise registry writes across replicas (SQLite's write lock already does).

        Taken before anything else in the transaction: a replica that sees another's
        activation only after its own insert would otherwise violate the one-active index or
        deadlock upgrading its lock.
        """
        if self.dialect == "postgresql":
            connection.execute(text("LOCK TABLE model_versions IN SHARE ROW EXCLUSIVE MODE"))

    @staticmethod
    def _activate(connection: Connection, version: str) -> None:
        # Two statements, in this order: the partial unique index forbids two active rows
        # even for an instant.
        connection.execute(
            update(_MODEL_VERSIONS)
            .where(_MODEL_VERSIONS.c.active.is_(True), _MODEL_VERSIONS.c.version != version)
            .values(active=False)
        )
        activated = connection.execute(
            update(_MODEL_VERSIONS).where(_MODEL_VERSIONS.c.version == version).values(active=True)
        )
        if activated.rowcount == 0:
            raise ModelVersionNotFound(version)
        logger.info("model version %s is now active", version)

    @staticmethod
    def _fetch_model_version(connection: Connection, version: str) -> ModelVersion:
        query = select(_MODEL_VERSIONS).where(_MODEL_VERSIONS.c.version == version)
        return ModelVersion(**connection.execute(query).one()._asdict())

    # ------------------------------------------------------------------ housekeeping

    def purge_older_than(self, days: float, *, now: datetime | None = None) -> dict[str, int]:
        """Delete incidents (with their labels), quarantine and drift reports older than ``days``.

        Model versions and source positions are kept: they describe the present, not history.
        """
        if not math.isfinite(days) or days < 0:
            raise ValueError(f"days must be a finite number >= 0, got {days}.")
        if now is not None and now.utcoffset() is None:
            raise ValueError(f"now must be timezone-aware (UTC), got naive {now.isoformat()}.")
        cutoff = (now or _utcnow()) - timedelta(days=days)
        old_incident_ids = select(_INCIDENTS.c.id).where(_INCIDENTS.c.created_at < cutoff)
        statements = {
            # Labels first and explicitly, so the count is exact whatever the FK settings.
            "labels": delete(_LABELS).where(_LABELS.c.incident_id.in_(old_incident_ids)),
            "incidents": delete(_INCIDENTS).where(_INCIDENTS.c.created_at < cutoff),
            "quarantine": delete(_QUARANTINE).where(_QUARANTINE.c.created_at < cutoff),
            "drift_reports": delete(_DRIFT_REPORTS).where(_DRIFT_REPORTS.c.created_at < cutoff),
        }
        with self._translate_errors("purge_older_than"), self._engine.begin() as connection:
            deleted = {name: connection.execute(stmt).rowcount for name, stmt in statements.items()}
        logger.info("purged rows older than %s: %s", cutoff.isoformat(), deleted)
        return deleted

    def checkpoint(self) -> None:
        """Fold SQLite's write-ahead log back into the database file; no-op elsewhere.

        Without it a busy WAL file grows until the next moment no reader is active.
        """
        if self.dialect != "sqlite":
            return
        with self._translate_errors("checkpoint"):
            # The raw connection is in autocommit mode; SQLAlchemy's connection would wrap the
            # pragma in BEGIN, and a checkpoint cannot run inside a transaction of its own.
            raw = self._engine.raw_connection()
            try:
                cursor = raw.cursor()
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                busy, log_frames, checkpointed = cursor.fetchone() or (0, 0, 0)
                cursor.close()
            except sqlite3.OperationalError as error:
                raise StoreUnavailable(f"checkpoint failed: {error}") from error
            finally:
                raw.close()
        if busy:
            logger.info(
                "WAL checkpoint incomplete: readers active (%s/%s frames)", checkpointed, log_frames
            )

    def close(self) -> None:
        """Release every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ errors

    @contextmanager
    def _translate_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (OperationalError, InterfaceError, PoolTimeoutError) as error:
            reason = getattr(error, "orig", None) or error
            raise StoreUnavailable(
                f"{action} failed: database at {self.redacted_url} is unavailable ({reason})."
            ) from error
