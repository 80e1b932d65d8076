"""Analyst feedback in the store: example records, labels on them, and their statuses.

A label is given on an incident; it applies to the incident's example records (or a chosen
few of them), one label row per record, so what an analyst says becomes support examples for
the model. Labels on incidents without example records (drift windows, rejected models) are
kept as ``noted``: part of the audit trail, nothing to learn from. Label rows are never
deleted or rewritten; only their status moves (pending → held/used/rejected, held →
released), with the reason and the model version that used them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, func, select, update

from storage.audit import AGENT_ACTOR, record_audit
from storage.models import Base
from storage.records import (
    LABEL_STATUSES,
    MAX_ACTOR_CHARS,
    MAX_LABEL_CHARS,
    Incident,
    IncidentNotFound,
    IncidentRecord,
    Label,
    LabelledRecord,
    require_text,
)
from storage.references import BENIGN_DRIFT, approve_candidates

_INCIDENTS: Table = Base.metadata.tables["incidents"]
_LABELS: Table = Base.metadata.tables["labels"]
_RECORDS: Table = Base.metadata.tables["incident_records"]

#: statuses a label can still teach from
LEARNABLE = ("pending", "released")
#: the audit action of each status move (moves to other statuses are not audited)
_STATUS_ACTIONS = {"held": "label.hold", "released": "label.release", "used": "label.use",
                   "rejected": "label.reject"}


class LabelNotFound(KeyError):
    """Raised when a label id does not exist (API maps it to 404)."""

    def __init__(self, label_id: int) -> None:
        super().__init__(label_id)
        self.label_id = label_id

    def __str__(self) -> str:
        return f"label {self.label_id} does not exist"


def require_label_text(name: str, value: str, max_chars: int) -> str:
    """A label or actor: non-empty after trimming, at most ``max_chars``."""
    require_text(name, value, max_chars)
    trimmed = value.strip()
    if not trimmed:
        raise ValueError(f"{name} must not be blank, got {value!r}.")
    return trimmed


class FeedbackStore:
    """Labels and example records; mixed into :class:`storage.Store`."""

    _session: Callable[..., AbstractContextManager[Connection]]

    def label_incident(self, incident_id: int, label: str, *, actor: str,
                       note: str | None = None) -> Incident:
        """Label an incident (all its example records); returns the updated incident."""
        return self.apply_label(incident_id, label, actor=actor, note=note)[0]

    def apply_label(self, incident_id: int, label: str, *, actor: str, note: str | None = None,
                    records: Sequence[str] | None = None,
                    origin: str | None = None) -> tuple[Incident, list[Label]]:
        """Label an incident: one label per example record (or per chosen ``records`` keys).

        The incident becomes ``labelled`` and carries the label; the new label rows are
        ``pending`` (screening and adaptation will look at them), or ``noted`` when the
        incident has no example records. ``benign_drift`` on a drift incident also approves
        the window kept beside it as a reference candidate (:mod:`storage.references`).
        Both are audited (``label.add``, ``reference.approve``) from ``origin``
        (:mod:`storage.audit`), in the same transaction.
        """
        label = require_label_text("label", label, MAX_LABEL_CHARS)
        actor = require_label_text("actor", actor, MAX_ACTOR_CHARS)
        now = datetime.now(UTC)
        with self._session("apply_label", write=True) as connection:
            # Writing first takes SQLite's write lock up front, so concurrent labellers queue
            # on busy_timeout instead of failing to upgrade a read lock.
            changed = connection.execute(
                update(_INCIDENTS).where(_INCIDENTS.c.id == incident_id)
                .values(analyst_label=label, status="labelled", updated_at=now))
            if changed.rowcount == 0:
                raise IncidentNotFound(incident_id)
            query = select(_RECORDS.c.id, _RECORDS.c.offset_key).where(
                _RECORDS.c.incident_id == incident_id).order_by(_RECORDS.c.ordinal)
            examples = list(connection.execute(query))
            if records is not None:
                wanted = set(records)
                unknown = sorted(wanted - {row.offset_key for row in examples})
                if unknown:
                    raise ValueError(
                        f"incident {incident_id} has no example record {unknown[0]!r}; see "
                        "`metasentry incidents show` for its records.")
                examples = [row for row in examples if row.offset_key in wanted]
            values: list[dict[str, Any]] = [
                {"incident_id": incident_id, "label": label, "actor": actor, "note": note,
                 "created_at": now, "incident_record_id": row.id, "status": "pending"}
                for row in examples
            ] or [{"incident_id": incident_id, "label": label, "actor": actor, "note": note,
                   "created_at": now, "incident_record_id": None, "status": "noted"}]
            ids: list[int] = [
                connection.execute(_LABELS.insert().values(**v).returning(_LABELS.c.id))
                .scalar_one() for v in values]
            record_audit(connection, actor=actor, action="label.add",
                         target=f"incident:{incident_id}", origin=origin, now=now,
                         detail={"label": label, "label_ids": ids,
                                 "status": values[0]["status"]})
            if label == BENIGN_DRIFT:
                approve_candidates(connection, incident_id, actor, now, origin=origin)
            incident = Incident(**connection.execute(
                select(_INCIDENTS).where(_INCIDENTS.c.id == incident_id)).one()._asdict())
            created = [Label(**row._asdict()) for row in connection.execute(
                select(_LABELS).where(_LABELS.c.id.in_(ids)).order_by(_LABELS.c.id))]
        return incident, created

    def list_labels(self, *, limit: int = 1000, since_id: int | None = None,
                    status: str | None = None, incident_id: int | None = None) -> list[Label]:
        """Labels in the order they were given; ``since_id`` resumes after a seen label."""
        if status is not None and status not in LABEL_STATUSES:
            raise ValueError(f"status must be one of {list(LABEL_STATUSES)}, got {status!r}.")
        query = select(_LABELS).order_by(_LABELS.c.id).limit(limit)
        if since_id is not None:
            query = query.where(_LABELS.c.id > since_id)
        if status is not None:
            query = query.where(_LABELS.c.status == status)
        if incident_id is not None:
            query = query.where(_LABELS.c.incident_id == incident_id)
        with self._session("list_labels") as connection:
            return [Label(**row._asdict()) for row in connection.execute(query)]

    def get_label(self, label_id: int) -> Label:
        with self._session("get_label") as connection:
            row = connection.execute(select(_LABELS).where(_LABELS.c.id == label_id)
                                     ).one_or_none()
        if row is None:
            raise LabelNotFound(label_id)
        return Label(**row._asdict())

    def incident_records(self, incident_id: int) -> list[IncidentRecord]:
        """The example records of an incident, in the order they arrived."""
        query = select(_RECORDS).where(_RECORDS.c.incident_id == incident_id).order_by(
            _RECORDS.c.ordinal, _RECORDS.c.id)
        with self._session("incident_records") as connection:
            return [IncidentRecord(**row._asdict()) for row in connection.execute(query)]

    def pending_labelled_records(self) -> list[LabelledRecord]:
        """Labels waiting for adaptation (pending or released), with their records."""
        return self._labelled(_LABELS.c.status.in_(LEARNABLE), "pending_labelled_records")

    def labelled_records(self, label_ids: Sequence[int]) -> list[LabelledRecord]:
        """The given labels with their records (what a model version enrols)."""
        if not label_ids:
            return []
        out: list[LabelledRecord] = []
        for chunk in _chunks(sorted(set(label_ids)), 500):
            out.extend(self._labelled(_LABELS.c.id.in_(chunk), "labelled_records"))
        return sorted(out, key=lambda r: r.label_id)

    def pending_label_counts(self) -> dict[str, int]:
        """Labels waiting for adaptation, per class."""
        query = (select(_LABELS.c.label, func.count()).where(
            _LABELS.c.status.in_(LEARNABLE), _LABELS.c.incident_record_id.is_not(None))
            .group_by(_LABELS.c.label))
        with self._session("pending_label_counts") as connection:
            return {str(row[0]): int(row[1]) for row in connection.execute(query)}

    def set_label_status(self, label_ids: Sequence[int], status: str, *,
                         reason: str | None = None, model_version: str | None = None,
                         actor: str = AGENT_ACTOR, origin: str | None = None) -> int:
        """Move labels to ``status`` (with the reason and the version); returns how many.

        A move to held, released, used or rejected is audited as one row for the call
        (``label.hold`` ...; ``actor`` defaults to the agent, which screens and adapts).
        """
        if status not in LABEL_STATUSES:
            raise ValueError(f"status must be one of {list(LABEL_STATUSES)}, got {status!r}.")
        if not label_ids:
            return 0
        values: dict[str, Any] = {"status": status, "status_reason": reason,
                                  "updated_at": datetime.now(UTC)}
        if model_version is not None:
            values["model_version"] = model_version
        changed = 0
        with self._session("set_label_status", write=True) as connection:
            for chunk in _chunks(sorted(set(label_ids)), 500):
                changed += connection.execute(
                    update(_LABELS).where(_LABELS.c.id.in_(chunk)).values(**values)).rowcount
            if status in _STATUS_ACTIONS and changed:
                ids = sorted(set(label_ids))
                target = (f"label:{ids[0]}" if len(ids) == 1 else
                          f"model:{model_version}" if model_version else f"labels:{len(ids)}")
                detail: dict[str, Any] = {"label_ids": ids, "reason": reason}
                if model_version is not None:
                    detail["model_version"] = model_version
                record_audit(connection, actor=actor, action=_STATUS_ACTIONS[status],
                             target=target, origin=origin, detail=detail,
                             now=values["updated_at"])
        return changed

    def release_label(self, label_id: int, *, actor: str, origin: str | None = None) -> Label:
        """Override screening: a held (or rejected) label may teach at the next adaptation.

        Audited as ``label.release`` by ``actor`` from ``origin``.
        """
        actor = require_label_text("actor", actor, MAX_ACTOR_CHARS)
        label = self.get_label(label_id)
        if label.status not in ("held", "rejected"):
            raise ValueError(
                f"label {label_id} is {label.status}; only held or rejected labels can be "
                "released.")
        self.set_label_status([label_id], "released", reason=f"released by {actor}",
                              actor=actor, origin=origin)
        return self.get_label(label_id)

    def actor_screening_record(self) -> dict[str, tuple[int, int]]:
        """Per actor: (labels screened, labels that passed) over the label history."""
        screened = ("held", "used", "rejected", "released")
        query = (select(_LABELS.c.actor, _LABELS.c.status, func.count())
                 .where(_LABELS.c.status.in_(screened)).group_by(_LABELS.c.actor,
                                                                  _LABELS.c.status))
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        with self._session("actor_screening_record") as connection:
            for row in connection.execute(query):
                actor, status, count = str(row[0]), str(row[1]), int(row[2])
                totals[actor][0] += count
                if status != "held":
                    totals[actor][1] += count
        return {actor: (values[0], values[1]) for actor, values in totals.items()}

    def accepted_labels_on_records(self, record_ids: Sequence[int]
                                   ) -> dict[int, list[tuple[str, str]]]:
        """(actor, label) of the labels already used on each of these records."""
        out: dict[int, list[tuple[str, str]]] = defaultdict(list)
        if not record_ids:
            return out
        with self._session("accepted_labels_on_records") as connection:
            for chunk in _chunks(sorted(set(record_ids)), 500):
                query = select(_LABELS.c.incident_record_id, _LABELS.c.actor,
                               _LABELS.c.label).where(
                    and_(_LABELS.c.incident_record_id.in_(chunk), _LABELS.c.status == "used"))
                for row in connection.execute(query):
                    out[int(row[0])].append((str(row[1]), str(row[2])))
        return out

    def _labelled(self, condition: Any, action: str) -> list[LabelledRecord]:
        query = (select(_LABELS.c.id, _LABELS.c.label, _LABELS.c.actor, _LABELS.c.status,
                        _RECORDS.c.fields, _RECORDS.c.textual, _RECORDS.c.incident_id,
                        _RECORDS.c.id.label("record_id"))
                 .join(_RECORDS, _RECORDS.c.id == _LABELS.c.incident_record_id)
                 .where(condition).order_by(_LABELS.c.id))
        with self._session(action) as connection:
            return [LabelledRecord(label_id=row.id, label=row.label, actor=row.actor,
                                   status=row.status, fields=dict(row.fields),
                                   textual=bool(row.textual), incident_id=row.incident_id,
                                   record_id=row.record_id)
                    for row in connection.execute(query)]


def _chunks(values: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]
