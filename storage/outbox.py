"""The alert outbox: incidents queued for the alert sinks, and the claims of delivery workers.

An incident that reaches the database but never reaches the on-call webhook is a lost alert;
one sent but never committed is a phantom. The outbox makes both impossible: the store inserts
one row per (incident, sink that wants it) in the very transaction that creates the incident
(:func:`queue_alerts`, called by ``Store.commit_batch``), and a delivery worker sends the rows
afterwards and marks them delivered. A crash between commit and delivery leaves the row
pending, so it is sent again: delivery is at least once, and each row carries a stable
``delivery_id`` by which a receiver drops what it has seen.

Claims are leases, not open transactions: a worker marks the rows it is about to send with
its name and a time (``claimed_by``, ``claimed_until``), commits, and only then talks to the
network, so no database transaction waits on a slow receiver. Each sink's queue is sent in
order by one worker at a time: a claim takes nothing while another worker holds a live lease
on the sink's pending rows, and on PostgreSQL the claim itself runs under a per-sink advisory
lock (``pg_try_advisory_xact_lock``), so two replicas claiming at the same instant cannot
both win; the loser skips the sink for this pass instead of waiting. ``FOR UPDATE SKIP
LOCKED`` is deliberately not used for the rows themselves: skipping a locked head row would
send later alerts before it. On SQLite (one agent process) the claim's first statement is a
write, which takes the database's single write lock before anything is read. A lease that runs
out (its worker died) returns the rows to the queue.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Insert, Table, func, select, text, update

from storage.models import Base
from storage.records import (
    MAX_HOLDER_CHARS,
    MAX_SINK_CHARS,
    OUTBOX_STATUSES,
    SEVERITIES,
    Incident,
    require_text,
)

_OUTBOX: Table = Base.metadata.tables["alert_outbox"]
_INCIDENTS: Table = Base.metadata.tables["incidents"]

#: first key of the advisory locks that serialise claims per sink ("MSOB"); the second is a
#: checksum of the sink's name (two sinks sharing one only take turns, which is harmless)
_CLAIM_LOCK_SPACE = 0x4D534F42
#: incidents looked up per statement when queueing (far below every backend's parameter limit)
_CHUNK = 500
MAX_ERROR_CHARS = 2000
MAX_LIST = 10_000


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AlertRoute:
    """Which incidents one sink is sent: a severity floor and, optionally, a set of kinds.

    Parameters
    ----------
    name
        The sink's name, unique per agent; outbox rows and metrics carry it.
    min_severity
        The lowest severity sent (one of ``storage.SEVERITIES``).
    kinds
        Incident kinds sent (``drift``, ``attack``, ...); None sends every kind.

    Examples
    --------
    >>> route = AlertRoute("pager", min_severity="high", kinds=frozenset({"attack"}))
    >>> route.accepts(kind="attack", severity="critical"), route.accepts("attack", "medium")
    (True, False)
    >>> route.accepts("drift", "high")
    False
    """

    name: str
    min_severity: str = "info"
    kinds: frozenset[str] | None = None

    def __post_init__(self) -> None:
        require_text("name", self.name, MAX_SINK_CHARS)
        if self.min_severity not in SEVERITIES:
            raise ValueError(f"min_severity must be one of {list(SEVERITIES)}, "
                             f"got {self.min_severity!r}.")
        if self.kinds is not None and not self.kinds:
            raise ValueError("kinds must name at least one kind; use None for every kind.")

    def accepts(self, kind: str, severity: str) -> bool:
        """Whether an incident of this kind and severity goes to this sink."""
        if self.kinds is not None and kind not in self.kinds:
            return False
        return SEVERITIES.index(severity) >= SEVERITIES.index(self.min_severity)


@dataclass(frozen=True)
class OutboxAlert:
    """One outbox row: an incident on its way to one sink."""

    id: int
    delivery_id: str
    incident_id: int
    sink: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    claimed_by: str | None
    claimed_until: datetime | None
    delivered_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class AlertBacklog:
    """What one sink still has to send: pending rows and when the oldest was queued."""

    sink: str
    pending: int
    oldest_created_at: datetime | None


def check_routes(routes: Iterable[AlertRoute]) -> tuple[AlertRoute, ...]:
    """The routes as a tuple, after checking that no two share a name."""
    routes = tuple(routes)
    names = [route.name for route in routes]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"alert sink names must be unique, repeated: {', '.join(repeated)}.")
    return routes


def queue_alerts(connection: Connection, insert: Callable[[Table], Insert],
                 routes: Sequence[AlertRoute], incident_ids: Sequence[int],
                 now: datetime) -> int:
    """Queue the incidents just created for every sink whose route accepts them.

    Runs inside the transaction that inserted the incidents, so the rows commit (or roll
    back) with them. The payload is the incident exactly as the REST API shows it
    (``Incident.to_dict``), read back from the row so it holds what was stored. Returns the
    number of rows queued.
    """
    if not routes or not incident_ids:
        return 0
    rows: list[dict[str, Any]] = []
    for start in range(0, len(incident_ids), _CHUNK):
        chunk = list(incident_ids[start:start + _CHUNK])
        found = connection.execute(select(_INCIDENTS).where(_INCIDENTS.c.id.in_(chunk))
                                   .order_by(_INCIDENTS.c.id))
        for row in found:
            incident = Incident(**row._asdict())
            payload = incident.to_dict()
            rows.extend({
                "delivery_id": str(uuid.uuid4()), "incident_id": incident.id,
                "sink": route.name, "payload": payload, "status": "pending", "attempts": 0,
                "next_attempt_at": now, "last_error": None, "claimed_by": None,
                "claimed_until": None, "delivered_at": None, "created_at": now,
            } for route in routes if route.accepts(incident.kind, incident.severity))
    if not rows:
        return 0
    statement = (insert(_OUTBOX)
                 .on_conflict_do_nothing(index_elements=["incident_id", "sink"])  # type: ignore[attr-defined]
                 .returning(_OUTBOX.c.id))
    return len(list(connection.execute(statement, rows).scalars()))


class OutboxStore:
    """The outbox half of :class:`~storage.Store`: backlog, claims, outcomes, listing."""

    _session: Callable[..., AbstractContextManager[Connection]]

    def alert_backlog(self, sink: str) -> AlertBacklog:
        """How many rows ``sink`` has pending, and when the oldest of them was queued."""
        query = select(func.count(), func.min(_OUTBOX.c.created_at)).where(
            _OUTBOX.c.sink == sink, _OUTBOX.c.status == "pending")
        with self._session("alert_backlog") as connection:
            row = connection.execute(query).one()
        count: int = row[0]
        oldest: datetime | None = row[1]
        return AlertBacklog(sink=sink, pending=int(count), oldest_created_at=oldest)

    def pending_alerts_by_sink(self) -> dict[str, int]:
        """Pending rows per sink, for every sink that has any (configured or not)."""
        query = (select(_OUTBOX.c.sink, func.count()).where(_OUTBOX.c.status == "pending")
                 .group_by(_OUTBOX.c.sink))
        with self._session("pending_alerts_by_sink") as connection:
            return {str(row[0]): int(row[1]) for row in connection.execute(query)}

    def claim_alerts(self, sink: str, *, holder: str, limit: int, lease_s: float,
                     now: datetime | None = None) -> list[OutboxAlert]:
        """Lease the head of ``sink``'s queue to ``holder``: up to ``limit`` due rows, in order.

        Returns nothing while another holder's lease on the sink is live, while another
        replica is claiming for the sink (PostgreSQL), or while the oldest pending row waits
        for its next attempt (later rows never overtake it). Rows ``holder`` already leases
        are returned again with the lease renewed.
        """
        require_text("sink", sink, MAX_SINK_CHARS)
        require_text("holder", holder, MAX_HOLDER_CHARS)
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}.")
        if not lease_s > 0:
            raise ValueError(f"lease_s must be positive, got {lease_s}.")
        now = now or _utcnow()
        pending = (_OUTBOX.c.sink == sink) & (_OUTBOX.c.status == "pending")
        with self._session("claim_alerts", write=True) as connection:
            postgres = connection.dialect.name == "postgresql"
            if postgres and not connection.execute(
                    text("SELECT pg_try_advisory_xact_lock(:space, :key)"),
                    {"space": _CLAIM_LOCK_SPACE, "key": _lock_key(sink)}).scalar():
                return []
            # Expired leases go back to the queue. Being a write, this statement also takes
            # SQLite's write lock before the reads below, so no other claim can interleave.
            connection.execute(update(_OUTBOX).where(pending, _OUTBOX.c.claimed_until < now)
                               .values(claimed_by=None, claimed_until=None))
            foreign = connection.execute(select(_OUTBOX.c.id).where(
                pending, _OUTBOX.c.claimed_by.is_not(None),
                _OUTBOX.c.claimed_by != holder).limit(1)).first()
            if foreign is not None:
                return []
            head = select(_OUTBOX).where(pending).order_by(_OUTBOX.c.id).limit(limit)
            if postgres:
                head = head.with_for_update()
            due: list[dict[str, Any]] = []
            for row in connection.execute(head):
                if row.next_attempt_at > now:
                    break  # the queue waits for its oldest row
                due.append(row._asdict())
            if not due:
                return []
            until = now + timedelta(seconds=lease_s)
            connection.execute(update(_OUTBOX).where(_OUTBOX.c.id.in_([r["id"] for r in due]))
                               .values(claimed_by=holder, claimed_until=until))
        return [OutboxAlert(**(row | {"claimed_by": holder, "claimed_until": until}))
                for row in due]

    def complete_alerts(self, alert_ids: Sequence[int], *, now: datetime | None = None) -> int:
        """Mark rows delivered (whoever holds them: they were delivered). Returns rows changed."""
        if not alert_ids:
            return 0
        statement = (update(_OUTBOX)
                     .where(_OUTBOX.c.id.in_(list(alert_ids)), _OUTBOX.c.status == "pending")
                     .values(status="delivered", delivered_at=now or _utcnow(),
                             attempts=_OUTBOX.c.attempts + 1, claimed_by=None,
                             claimed_until=None))
        with self._session("complete_alerts", write=True) as connection:
            return int(connection.execute(statement).rowcount)

    def fail_alert(self, alert_id: int, *, holder: str, error: str,
                   retry_at: datetime | None) -> bool:
        """Record a failed attempt: retry at ``retry_at``, or, when None, give up (``failed``).

        Only the lease holder's verdict counts: a worker whose lease ran out while it waited on
        the network changes nothing (False). The error is kept in ``last_error``.
        """
        values: dict[str, Any] = {"attempts": _OUTBOX.c.attempts + 1,
                                  "last_error": error[:MAX_ERROR_CHARS],
                                  "claimed_by": None, "claimed_until": None}
        if retry_at is None:
            values["status"] = "failed"
        else:
            values["next_attempt_at"] = retry_at
        statement = (update(_OUTBOX)
                     .where(_OUTBOX.c.id == alert_id, _OUTBOX.c.status == "pending",
                            _OUTBOX.c.claimed_by == holder)
                     .values(**values))
        with self._session("fail_alert", write=True) as connection:
            return bool(connection.execute(statement).rowcount)

    def release_alerts(self, *, holder: str) -> int:
        """Give up every lease ``holder`` has (at shutdown), so another worker may go on now."""
        statement = (update(_OUTBOX)
                     .where(_OUTBOX.c.claimed_by == holder, _OUTBOX.c.status == "pending")
                     .values(claimed_by=None, claimed_until=None))
        with self._session("release_alerts", write=True) as connection:
            return int(connection.execute(statement).rowcount)

    def list_alerts(self, *, sink: str | None = None, status: str | None = None,
                    limit: int = 50) -> list[OutboxAlert]:
        """Outbox rows, oldest first (the order they are delivered in)."""
        if not 1 <= limit <= MAX_LIST:
            raise ValueError(f"limit must be between 1 and {MAX_LIST}, got {limit}.")
        if status is not None and status not in OUTBOX_STATUSES:
            raise ValueError(f"status must be one of {list(OUTBOX_STATUSES)}, got {status!r}.")
        query = select(_OUTBOX).order_by(_OUTBOX.c.id).limit(limit)
        if sink is not None:
            query = query.where(_OUTBOX.c.sink == sink)
        if status is not None:
            query = query.where(_OUTBOX.c.status == status)
        with self._session("list_alerts") as connection:
            return [OutboxAlert(**row._asdict()) for row in connection.execute(query)]


def _lock_key(sink: str) -> int:
    """A signed 32-bit key for ``sink`` (PostgreSQL's two-key advisory locks take int4)."""
    key = zlib.crc32(sink.encode("utf-8"))
    return key - (1 << 32) if key >= 1 << 31 else key
