"""The incident store: one engine, short transactions, safe to share between threads.

Every public method opens its own transaction and returns frozen records, so the pipeline
thread, API threads and scheduler jobs can share one ``Store`` without locks of their own.

Errors come in two kinds, and the caller needs to tell them apart to make progress:

- :class:`StoreUnavailable`: the database could not be reached, was busy, or did not answer
  within :class:`~storage.engine.StoreTimeouts` (no call waits for ever, even when packets are
  silently dropped). Retrying later may succeed.
- :class:`StoreRejected`: the database refused the values themselves. Retrying the same
  values fails the same way; the caller has to change them (``agent.salvage``).

Text is made storable on the way in (``storage.text``); a filter that names text no stored
value can hold (a NUL, an unpaired surrogate) matches nothing. Anything else is a bug and
propagates unchanged, after the transaction rolled back.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import orjson
from alembic import command
from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Insert,
    Table,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import (
    DataError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from storage.audit import AuditStore
from storage.deadline import Watchdog, shut_down_socket
from storage.drift_compact import read_features, stored_features
from storage.engine import StoreTimeouts, create_store_engine, parse_store_url
from storage.feedback import FeedbackStore
from storage.migrations import alembic_config, current_revision, head_revision
from storage.models import Base
from storage.outbox import AlertRoute, OutboxStore, check_routes, queue_alerts
from storage.records import (
    MAX_EXCERPT_CHARS,
    MAX_SOURCE_CHARS,
    STATUSES,
    CommitResult,
    DriftReportRow,
    Incident,
    IncidentExample,
    IncidentNotFound,
    IncidentUpdate,
    NewDriftReport,
    NewIncident,
    NewReferenceVersion,
    QuarantinedRecord,
    QuarantineEntry,
    StoreRejected,
    StoreUnavailable,
    require_text,
)
from storage.references import ReferenceStore, insert_references
from storage.registry import RegistryStore
from storage.text import is_storable
from storage.urls import redact_url

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 10_000
# Any constant works; it only has to be the same for every replica migrating one database.
_MIGRATION_LOCK_KEY = 0x4D535452  # "MSTR"

_INCIDENTS: Table = Base.metadata.tables["incidents"]
_LABELS: Table = Base.metadata.tables["labels"]
_QUARANTINE: Table = Base.metadata.tables["quarantine"]
_DRIFT_REPORTS: Table = Base.metadata.tables["drift_reports"]
#: first key of the advisory lock one replica holds while it runs retention ("MSRT"); the
#: second is a hash of the schema, so deployments sharing a database do not wait on each other
_MAINTENANCE_LOCK_SPACE = 0x4D535254
_RECORDS: Table = Base.metadata.tables["incident_records"]
_SOURCE_OFFSETS: Table = Base.metadata.tables["source_offsets"]
_OUTBOX: Table = Base.metadata.tables["alert_outbox"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _truncate(value: str | None, max_chars: int = MAX_EXCERPT_CHARS) -> str | None:
    return None if value is None else value[:max_chars]


def _require_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}.")


def _can_match(*values: str | None) -> bool:
    """False when a filter value holds text that is never stored, so no row can match it."""
    return all(value is None or is_storable(value) for value in values)


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
        "record_count": incident.record_count,
        "first_offset": incident.first_offset,
        "last_offset": incident.last_offset,
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
        "features": stored_features(report.features, report.rejected),
        "top_features": list(report.top_features),
        "window_span": None if report.window_span is None else dict(report.window_span),
    }


class Store(FeedbackStore, RegistryStore, ReferenceStore, OutboxStore, AuditStore):
    """SQL persistence for incidents, labels, quarantine, drift reports, offsets and models.

    Labels and example records live in :class:`~storage.feedback.FeedbackStore`, the model
    registry in :class:`~storage.registry.RegistryStore`, reference versions in
    :class:`~storage.references.ReferenceStore`, the alert outbox in
    :class:`~storage.outbox.OutboxStore`, the audit log in :class:`~storage.audit.AuditStore`
    (read only: rows are appended by the changes they record); all share this class's
    sessions.

    Parameters
    ----------
    url
        ``sqlite:///path/to/metasentry.db`` (the parent directory is created) or
        ``postgresql+psycopg://user@host/db``. Nothing connects until the first call, so a
        store can be built while the database is still starting.
    timeouts
        How long PostgreSQL calls may wait before they raise :class:`StoreUnavailable`
        (defaults: :class:`~storage.engine.StoreTimeouts`). Ignored for SQLite.
    alert_routes
        The alert sinks and which incidents each wants. Every incident a commit creates is
        queued in the same transaction for each sink whose route accepts it
        (:mod:`storage.outbox`), whichever code path commits it.

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

    def __init__(self, url: str, *, timeouts: StoreTimeouts | None = None,
                 alert_routes: Sequence[AlertRoute] = ()) -> None:
        self._url = parse_store_url(url)
        self.timeouts = timeouts or StoreTimeouts()
        self._alert_routes = check_routes(alert_routes)
        self._watchdog = Watchdog()
        self._engine = create_store_engine(self._url, self.timeouts, self._watchdog)
        self._dialect_insert: Callable[[Table], Insert] = (
            postgresql.insert if self.dialect == "postgresql" else sqlite.insert  # type: ignore[assignment]
        )
        self._upsert_position = self._position_upsert()
        logger.info("store opened at %s", self.redacted_url)

    # ------------------------------------------------------------------ identity and schema

    @property
    def redacted_url(self) -> str:
        """The URL with any password replaced by ``***``: safe for logs and status pages."""
        return redact_url(self._url.render_as_string(hide_password=False))

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._url.get_backend_name()

    @property
    def alert_routes(self) -> tuple[AlertRoute, ...]:
        """The sinks every created incident is queued for (see :mod:`storage.outbox`)."""
        return self._alert_routes

    def upgrade(self) -> None:
        """Migrate the schema to the newest revision shipped with this package."""
        with self._session("upgrade", write=True, maintenance=True) as connection:
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
        with self._session("current_revision") as connection:
            return current_revision(connection)

    def head_revision(self) -> str:
        """The newest schema revision this package knows."""
        return head_revision()

    def at_head(self) -> bool:
        """True when the schema needs no upgrade."""
        return self.current_revision() == self.head_revision()

    def ping(self) -> bool:
        """Whether the database answers right now (for readiness probes); never hangs."""
        try:
            with self._session("ping") as connection:
                connection.execute(text("SELECT 1"))
        except (SQLAlchemyError, StoreUnavailable) as error:
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
        incident_updates: Sequence[IncidentUpdate] = (),
        examples: Sequence[IncidentExample] = (),
        references: Sequence[NewReferenceVersion] = (),
    ) -> CommitResult:
        """Record everything one batch produced, and where the source got to, atomically.

        Replays are harmless: incidents already stored under (source, offset_key, detector),
        quarantined records under (source, offset_key) and drift reports under (source,
        detector, window_end_key) are skipped and counted as duplicates; updates of grouped
        incidents carry absolute counts, and example records are unique per incident.
        ``position=None`` leaves the saved source position untouched. Reference versions and
        candidates (:mod:`storage.references`) commit with the batch that produced them, so a
        restart resumes with the reference the committed windows were tested against. Each
        incident created is queued for the alert sinks that want it (``alert_routes``) in the
        same transaction: no alert commits without its deliveries, and none is queued twice.
        """
        require_text("source", source, MAX_SOURCE_CHARS)
        now = _utcnow()
        incident_rows = [_incident_values(item, now) for item in incidents]
        quarantine_rows = [_quarantine_values(item, now) for item in quarantine]
        drift_rows = [_drift_report_values(item, now) for item in drift_reports]
        with self._session("commit_batch", write=True) as connection:
            created_ids = self._insert_new(
                connection, _INCIDENTS, incident_rows, ("source", "offset_key", "detector")
            )
            queued = queue_alerts(connection, self._dialect_insert, self._alert_routes,
                                  created_ids, now)
            quarantined = self._insert_new(
                connection, _QUARANTINE, quarantine_rows, ("source", "offset_key")
            )
            drift_ids = self._insert_new(
                connection, _DRIFT_REPORTS, drift_rows, ("source", "detector", "window_end_key")
            )
            updated = self._update_groups(connection, incident_updates, now)
            stored = self._insert_examples(connection, examples, now)
            insert_references(connection, self._dialect_insert, references, now)
            if position is not None:
                self._save_position(connection, source, position, now)
        return CommitResult(
            incidents_created=len(created_ids),
            incidents_duplicate=len(incident_rows) - len(created_ids),
            quarantined=len(quarantined),
            drift_reports=len(drift_ids),
            created_ids=tuple(created_ids),
            incidents_updated=updated,
            examples_stored=stored,
            alerts_queued=queued,
        )

    @staticmethod
    def _update_groups(connection: Connection, updates: Sequence[IncidentUpdate],
                       now: datetime) -> int:
        """Grouped incidents that gained records: set their absolute count and last record.

        One statement executed for every update at once, not a round trip each.
        """
        if not updates:
            return 0
        statement = (
            update(_INCIDENTS)
            .where(_INCIDENTS.c.source == bindparam("b_source"),
                   _INCIDENTS.c.offset_key == bindparam("b_offset_key"),
                   _INCIDENTS.c.detector == bindparam("b_detector"))
            .values(record_count=bindparam("b_count"), last_offset=bindparam("b_last"),
                    updated_at=now)
        )
        rows = [{"b_source": u.source, "b_offset_key": u.offset_key, "b_detector": u.detector,
                 "b_count": u.record_count, "b_last": u.last_offset} for u in updates]
        return int(connection.execute(statement, rows).rowcount)

    def _insert_examples(self, connection: Connection, examples: Sequence[IncidentExample],
                         now: datetime) -> int:
        """Example records under their incident (found by its key); replays add nothing."""
        if not examples:
            return 0
        keys = {(e.source, e.incident_offset_key, e.detector) for e in examples}
        ids: dict[tuple[str, str, str], int] = {}
        for source, offset_key, detector in keys:
            found = connection.execute(select(_INCIDENTS.c.id).where(
                _INCIDENTS.c.source == source, _INCIDENTS.c.offset_key == offset_key,
                _INCIDENTS.c.detector == detector)).scalar_one_or_none()
            if found is not None:
                ids[(source, offset_key, detector)] = int(found)
        rows = [{
            "incident_id": ids[(e.source, e.incident_offset_key, e.detector)],
            "created_at": now, "offset_key": e.offset_key, "ordinal": e.ordinal,
            "fields": dict(e.fields), "textual": e.textual,
            "features": [float(v) for v in e.features], "predicted_class": e.predicted_class,
            "confidence": e.confidence, "explanation": dict(e.explanation),
        } for e in examples if (e.source, e.incident_offset_key, e.detector) in ids]
        if not rows:
            return 0
        statement = (self._dialect_insert(_RECORDS)
                     .on_conflict_do_nothing(index_elements=["incident_id", "offset_key"])  # type: ignore[attr-defined]
                     .returning(_RECORDS.c.id))
        return len(list(connection.execute(statement, rows).scalars()))

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

    def _position_upsert(self) -> Insert:
        """The one statement every batch's commit saves its position with.

        Built once, with the values as bound parameters, so SQLAlchemy compiles it once: a
        statement carrying its values would be compiled again on every commit.
        """
        statement = self._dialect_insert(_SOURCE_OFFSETS)
        return statement.on_conflict_do_update(  # type: ignore[attr-defined, no-any-return]
            index_elements=["source"],
            set_={
                "position": statement.excluded.position,  # type: ignore[attr-defined]
                "updated_at": statement.excluded.updated_at,  # type: ignore[attr-defined]
            },
        )

    def _save_position(
        self, connection: Connection, source: str, position: Mapping[str, Any], now: datetime
    ) -> None:
        connection.execute(self._upsert_position,
                           {"source": source, "position": dict(position), "updated_at": now})

    def load_position(self, source: str) -> dict[str, Any] | None:
        """The position last committed for ``source``, or None if it never committed."""
        query = select(_SOURCE_OFFSETS.c.position).where(_SOURCE_OFFSETS.c.source == source)
        with self._session("load_position") as connection:
            position = connection.execute(query).scalar_one_or_none()
        return None if position is None else dict(position)

    # ------------------------------------------------------------------ incidents and labels

    def get_incident(self, incident_id: int) -> Incident:
        with self._session("get_incident") as connection:
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
        if not _can_match(kind, source):
            return []
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
        with self._session("list_incidents") as connection:
            return [Incident(**row._asdict()) for row in connection.execute(query)]

    def count_incidents(self) -> dict[str, int]:
        """Number of stored incidents per kind."""
        return self._count_by(_INCIDENTS.c.kind, "count_incidents")

    def set_status(self, incident_id: int, status: str) -> Incident:
        """Move an incident through triage (``open``, ``labelled``, ``dismissed``, ``resolved``)."""
        _require_status(status)
        with self._session("set_status", write=True) as connection:
            self._update_incident(connection, incident_id, status=status, updated_at=_utcnow())
            return self._fetch_incident(connection, incident_id)

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
        if not _can_match(source):
            return []
        query = select(_QUARANTINE).order_by(_QUARANTINE.c.id.desc()).limit(limit)
        if source is not None:
            query = query.where(_QUARANTINE.c.source == source)
        with self._session("list_quarantine") as connection:
            return [QuarantineEntry(**row._asdict()) for row in connection.execute(query)]

    def count_quarantine(self) -> dict[str, int]:
        """Number of quarantined records per reason."""
        return self._count_by(_QUARANTINE.c.reason, "count_quarantine")

    def list_drift_reports(
        self, *, source: str | None = None, detector: str | None = None, limit: int = 50
    ) -> list[DriftReportRow]:
        """Newest drift reports first."""
        _require_limit(limit)
        if not _can_match(source, detector):
            return []
        query = select(_DRIFT_REPORTS).order_by(_DRIFT_REPORTS.c.id.desc()).limit(limit)
        if source is not None:
            query = query.where(_DRIFT_REPORTS.c.source == source)
        if detector is not None:
            query = query.where(_DRIFT_REPORTS.c.detector == detector)
        with self._session("list_drift_reports") as connection:
            return [DriftReportRow(**(row._asdict() | {"features": read_features(row.features)}))
                    for row in connection.execute(query)]

    def _count_by(self, column: Column[str], action: str) -> dict[str, int]:
        query = select(column, func.count()).group_by(column)
        with self._session(action) as connection:
            return {key: count for key, count in connection.execute(query)}

    # ------------------------------------------------------------------ housekeeping

    def purge_older_than(self, days: float, *, now: datetime | None = None) -> dict[str, int]:
        """Delete incidents (with their labels), quarantine and drift reports older than ``days``.

        Model versions and source positions are kept: they describe the present, not history.
        So are incidents whose labels teach a model (used, or still to be screened, held or
        released): a version is rebuilt from its labels' records, and they are its training data.
        So are incidents with an alert still pending delivery, and their outbox rows: an alert
        is never dropped for its age. Outbox rows that were delivered or failed go with their
        incident, or once they are older than ``days`` themselves.
        """
        # The audit log (``audit_log``) is deliberately absent below: retention never deletes
        # who changed what the agent believes. An operator whose policy demands pruning it
        # does so explicitly, in SQL (docs/RELIABILITY.md, "The audit log").
        if not math.isfinite(days) or days < 0:
            raise ValueError(f"days must be a finite number >= 0, got {days}.")
        if now is not None and now.utcoffset() is None:
            raise ValueError(f"now must be timezone-aware (UTC), got naive {now.isoformat()}.")
        cutoff = (now or _utcnow()) - timedelta(days=days)
        teaching = select(_LABELS.c.incident_id).where(
            _LABELS.c.status.in_(("pending", "held", "released", "used")))
        alerting = select(_OUTBOX.c.incident_id).where(_OUTBOX.c.status == "pending")
        old = ((_INCIDENTS.c.created_at < cutoff) & _INCIDENTS.c.id.not_in(teaching)
               & _INCIDENTS.c.id.not_in(alerting))
        old_incident_ids = select(_INCIDENTS.c.id).where(old)
        statements = {
            # Labels and outbox rows first and explicitly, so the counts are exact whatever
            # the FK settings.
            "labels": delete(_LABELS).where(_LABELS.c.incident_id.in_(old_incident_ids)),
            "alert_outbox": delete(_OUTBOX).where(
                _OUTBOX.c.status != "pending",
                _OUTBOX.c.incident_id.in_(old_incident_ids) | (_OUTBOX.c.created_at < cutoff)),
            "incidents": delete(_INCIDENTS).where(old),
            "quarantine": delete(_QUARANTINE).where(_QUARANTINE.c.created_at < cutoff),
            "drift_reports": delete(_DRIFT_REPORTS).where(_DRIFT_REPORTS.c.created_at < cutoff),
        }
        with self._session("purge_older_than", write=True, maintenance=True) as connection:
            if not self._maintenance_turn(connection):
                logger.info("retention: another agent on this database is purging; skipped")
                return dict.fromkeys(statements, 0)
            deleted = {name: connection.execute(stmt).rowcount for name, stmt in statements.items()}
        logger.info("purged rows older than %s: %s", cutoff.isoformat(), deleted)
        return deleted

    @staticmethod
    def _maintenance_turn(connection: Connection) -> bool:
        """Whether this agent may run the once-per-database job now (retention).

        Replicas share one PostgreSQL and each schedules retention; the first to take the
        transaction-scoped advisory lock of its schema purges, the others skip (the next run
        comes within the hour). SQLite serialises writers by itself: always this agent's turn.
        """
        if connection.dialect.name != "postgresql":
            return True
        return bool(connection.execute(
            text("SELECT pg_try_advisory_xact_lock(:space, hashtext(current_schema()))"),
            {"space": _MAINTENANCE_LOCK_SPACE}).scalar())

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
        self._watchdog.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ sessions and errors

    @contextmanager
    def _session(
        self, action: str, *, write: bool = False, maintenance: bool = False
    ) -> Iterator[Connection]:
        """A connection (in a transaction when ``write``), every wait on it bounded.

        The deadline covers the whole call, COMMIT included; checking a connection out of the
        pool is bounded separately (ping and connect timeouts, ``storage.engine``).
        """
        with self._translate_errors(action), self._engine.connect() as connection:
            with self._deadline(connection, action, maintenance):
                if not write:
                    yield connection
                    return
                with connection.begin():
                    if maintenance and self.dialect == "postgresql":
                        milliseconds = str(math.ceil(self.timeouts.maintenance_s * 1000))
                        connection.execute(
                            text("SELECT set_config('statement_timeout', :ms, true)"),
                            {"ms": milliseconds},
                        )
                    yield connection

    @contextmanager
    def _deadline(self, connection: Connection, action: str, maintenance: bool) -> Iterator[None]:
        """Shut the connection down if the call outlives its deadline (PostgreSQL only).

        SQLite needs no deadline: its only wait, for a lock, is bounded by busy_timeout.
        """
        if self.dialect != "postgresql":
            yield
            return
        seconds = self.timeouts.maintenance_s if maintenance else self.timeouts.operation_s
        dbapi_connection = connection.connection.dbapi_connection
        action_on_expiry = shut_down_socket(dbapi_connection)  # type: ignore[arg-type]
        deadline = self._watchdog.arm(seconds, action_on_expiry)
        try:
            yield
        except Exception as error:
            if deadline.fired:
                raise StoreUnavailable(
                    f"{action} failed: database at {self.redacted_url} did not answer within "
                    f"{seconds:g}s."
                ) from error
            raise
        finally:
            self._watchdog.disarm(deadline)

    @contextmanager
    def _translate_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (OperationalError, InterfaceError, PoolTimeoutError, DisconnectionError) as error:
            reason = getattr(error, "orig", None) or error
            raise StoreUnavailable(
                f"{action} failed: database at {self.redacted_url} is unavailable ({reason})."
            ) from error
        except (DataError, IntegrityError) as error:
            raise StoreRejected(
                f"{action} failed: the database refused the data ({error.orig})."
            ) from error
        except StatementError as error:
            if not isinstance(error.orig, UnicodeError | orjson.JSONEncodeError):
                raise
            raise StoreRejected(
                f"{action} failed: the data cannot be encoded ({error.orig})."
            ) from error
        except (UnicodeError, orjson.JSONEncodeError) as error:
            raise StoreRejected(
                f"{action} failed: the data cannot be encoded ({error})."
            ) from error
