"""Reference versions in the store: what "normal" is, per source and window detector, over time.

A drift monitor that never moves its reference raises the same false alarm forever once the
stream's normal behaviour has moved; one that follows the stream blindly can be walked anywhere
by slow poisoning. Keeping every reference as a recorded version makes both choices
auditable: each version says where it came from (the configured file, the rolling reference,
a benign-drift window an analyst approved, a rollback), which version it replaced, and who
approved it; exactly one version per (source, detector) is active, and a rollback is one more
version, so history is never rewritten.

Candidates are the records of a drift window kept beside its incident. Labelling that
incident ``benign_drift`` approves the candidate in the same transaction as the label; the
running agent merges it into a new version (the pipeline is the only writer of detector
state) and marks it applied in the commit that stores the version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Insert, Table, select, update

from storage.audit import record_audit
from storage.models import Base
from storage.records import (
    MAX_ACTOR_CHARS,
    NewReferenceVersion,
    ReferenceVersion,
    ReferenceVersionNotFound,
    require_text,
)

_REFERENCES: Table = Base.metadata.tables["reference_versions"]
_INCIDENTS: Table = Base.metadata.tables["incidents"]

#: the label that approves a drift window (or a held-back rolling reference) as normal
BENIGN_DRIFT = "benign_drift"
#: superseded rolling versions whose data is kept (older ones keep their row, not their data)
KEEP_ROLLING = 5

_META_COLUMNS = [c for c in _REFERENCES.c if c.name != "data"]


def approve_candidates(connection: Connection, incident_id: int, actor: str,
                       now: datetime, *, origin: str | None = None) -> int:
    """Approve the candidates kept for an incident (inside the label's transaction).

    An approval is audited (``reference.approve``) when it approved something.
    """
    incident = connection.execute(
        select(_INCIDENTS.c.source, _INCIDENTS.c.offset_key, _INCIDENTS.c.detector)
        .where(_INCIDENTS.c.id == incident_id)).one_or_none()
    if incident is None:
        return 0
    approved = int(connection.execute(
        update(_REFERENCES).where(
            _REFERENCES.c.source == incident.source,
            _REFERENCES.c.detector == incident.detector,
            _REFERENCES.c.incident_key == incident.offset_key,
            _REFERENCES.c.status == "candidate")
        .values(status="approved", actor=actor, updated_at=now)).rowcount)
    if approved:
        record_audit(connection, actor=actor, action="reference.approve",
                     target=f"reference:{incident.source}/{incident.detector}/candidate",
                     origin=origin, now=now,
                     detail={"incident_id": incident_id, "incident_key": incident.offset_key,
                             "candidates": approved})
    return approved


def insert_references(connection: Connection, insert: Callable[[Table], Insert],
                      rows: Sequence[NewReferenceVersion], now: datetime) -> int:
    """Store versions and candidates of one commit; a replayed row is skipped. Returns new rows.

    A new version supersedes the active one of its (source, detector) and marks the
    candidates it merged as applied; rolling versions beyond :data:`KEEP_ROLLING` lose their
    data (their row stays, for the history).
    """
    stored = 0
    for row in rows:
        values: dict[str, Any] = {
            "created_at": now, "source": row.source, "detector": row.detector,
            "version": row.version, "origin": row.origin,
            "status": "candidate" if row.version is None else "active",
            "parent": row.parent, "incident_key": row.incident_key, "actor": row.actor,
            "note": row.note, "n_records": row.n_records, "sha256": row.sha256,
            "summary": dict(row.summary), "data": row.data, "updated_at": None,
        }
        unique = (["source", "detector", "incident_key"] if row.version is None
                  else ["source", "detector", "version"])
        statement = (insert(_REFERENCES)
                     .on_conflict_do_nothing(index_elements=unique)  # type: ignore[attr-defined]
                     .returning(_REFERENCES.c.id))
        new_id = connection.execute(statement, values).scalar_one_or_none()
        if new_id is None:
            continue
        stored += 1
        if row.version is not None:
            _supersede(connection, row, int(new_id), now)
    return stored


def _supersede(connection: Connection, row: NewReferenceVersion, new_id: int,
               now: datetime) -> None:
    same = (_REFERENCES.c.source == row.source, _REFERENCES.c.detector == row.detector)
    connection.execute(update(_REFERENCES).where(
        *same, _REFERENCES.c.status == "active", _REFERENCES.c.id != new_id)
        .values(status="superseded", updated_at=now))
    applied = list(row.summary.get("applied_candidates", []))
    if applied:
        connection.execute(update(_REFERENCES).where(*same, _REFERENCES.c.id.in_(applied))
                           .values(status="applied", updated_at=now))
    stale = [r.id for r in connection.execute(
        select(_REFERENCES.c.id).where(*same, _REFERENCES.c.origin == "rolling",
                                       _REFERENCES.c.status == "superseded")
        .order_by(_REFERENCES.c.version.desc()).offset(KEEP_ROLLING))]
    if stale:
        connection.execute(update(_REFERENCES).where(_REFERENCES.c.id.in_(stale))
                           .values(status="pruned", data=b"", updated_at=now))


class ReferenceStore:
    """Reference versions and candidates; mixed into :class:`storage.Store`."""

    _session: Callable[..., AbstractContextManager[Connection]]
    _dialect_insert: Callable[[Table], Insert]

    def list_references(self, *, source: str | None = None, detector: str | None = None,
                        candidates: bool = False, limit: int = 100) -> list[ReferenceVersion]:
        """Versions (newest first), or with ``candidates`` the candidates, optionally filtered."""
        query = select(*_META_COLUMNS).limit(limit)
        query = (query.where(_REFERENCES.c.version.is_(None)).order_by(_REFERENCES.c.id.desc())
                 if candidates else
                 query.where(_REFERENCES.c.version.is_not(None))
                 .order_by(_REFERENCES.c.source, _REFERENCES.c.detector,
                           _REFERENCES.c.version.desc()))
        if source is not None:
            query = query.where(_REFERENCES.c.source == source)
        if detector is not None:
            query = query.where(_REFERENCES.c.detector == detector)
        with self._session("list_references") as connection:
            return [ReferenceVersion(**row._asdict()) for row in connection.execute(query)]

    def get_reference(self, reference_id: int) -> ReferenceVersion:
        with self._session("get_reference") as connection:
            row = connection.execute(select(*_META_COLUMNS).where(
                _REFERENCES.c.id == reference_id)).one_or_none()
        if row is None:
            raise ReferenceVersionNotFound(reference_id)
        return ReferenceVersion(**row._asdict())

    def find_reference(self, source: str, detector: str, version: int) -> ReferenceVersion:
        """Version number ``version`` of (source, detector)."""
        with self._session("find_reference") as connection:
            row = connection.execute(select(*_META_COLUMNS).where(
                _REFERENCES.c.source == source, _REFERENCES.c.detector == detector,
                _REFERENCES.c.version == version)).one_or_none()
        if row is None:
            raise ReferenceVersionNotFound(f"{source}/{detector} v{version}")
        return ReferenceVersion(**row._asdict())

    def active_reference(self, source: str, detector: str) -> ReferenceVersion | None:
        with self._session("active_reference") as connection:
            row = connection.execute(select(*_META_COLUMNS).where(
                _REFERENCES.c.source == source, _REFERENCES.c.detector == detector,
                _REFERENCES.c.status == "active")).one_or_none()
        return None if row is None else ReferenceVersion(**row._asdict())

    def approved_candidates(self, source: str, detector: str) -> list[ReferenceVersion]:
        """Candidates approved by a ``benign_drift`` label and not yet merged, oldest first."""
        with self._session("approved_candidates") as connection:
            return [ReferenceVersion(**row._asdict()) for row in connection.execute(
                select(*_META_COLUMNS).where(
                    _REFERENCES.c.source == source, _REFERENCES.c.detector == detector,
                    _REFERENCES.c.status == "approved").order_by(_REFERENCES.c.id))]

    def reference_data(self, reference_id: int) -> bytes:
        """The records of a version or candidate, verified against their recorded sha256."""
        with self._session("reference_data") as connection:
            row = connection.execute(select(_REFERENCES.c.data, _REFERENCES.c.sha256).where(
                _REFERENCES.c.id == reference_id)).one_or_none()
        if row is None:
            raise ReferenceVersionNotFound(reference_id)
        data = bytes(row.data)
        if not data:
            raise ValueError(f"reference version {reference_id} was pruned: its records are "
                             "no longer kept.")
        if hashlib.sha256(data).hexdigest() != row.sha256:
            raise ValueError(f"reference version {reference_id} does not match its recorded "
                             "sha256; refusing to load it.")
        return data

    def rollback_reference(self, source: str, detector: str, version: int, *, actor: str,
                           note: str | None = None, origin: str | None = None
                           ) -> ReferenceVersion:
        """Make a copy of version ``version`` the active one (a new version: history stays).

        Audited as ``reference.rollback`` by ``actor`` from ``origin``, in the same transaction.
        """
        require_text("actor", actor, MAX_ACTOR_CHARS)
        target = self.find_reference(source, detector, version)
        data = self.reference_data(target.id)
        now = datetime.now(UTC)
        with self._session("rollback_reference", write=True) as connection:
            latest: int = connection.execute(select(_REFERENCES.c.version).where(
                _REFERENCES.c.source == source, _REFERENCES.c.detector == detector,
                _REFERENCES.c.version.is_not(None))
                .order_by(_REFERENCES.c.version.desc()).limit(1)).scalar_one()
            row = NewReferenceVersion(
                source=source, detector=detector, origin="rollback", data=data,
                sha256=target.sha256, n_records=target.n_records,
                # The copy is its own anchor, as a running agent treats it.
                summary={**target.summary, "applied_candidates": [], "accepted": 0,
                         "anchor_version": int(latest) + 1},
                version=int(latest) + 1, parent=version, actor=actor,
                note=note or f"rollback to version {version}")
            previous = connection.execute(select(_REFERENCES.c.version).where(
                _REFERENCES.c.source == source, _REFERENCES.c.detector == detector,
                _REFERENCES.c.status == "active")).scalar_one_or_none()
            insert_references(connection, self._dialect_insert, [row], now)
            record_audit(connection, actor=actor, action="reference.rollback",
                         target=f"reference:{source}/{detector}/v{int(latest) + 1}",
                         origin=origin, now=now,
                         detail={"copy_of": version, "previous_active": previous})
        return self.find_reference(source, detector, int(latest) + 1)
