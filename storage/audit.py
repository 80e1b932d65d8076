"""The audit log: who changed what the agent believes, from where, and when.

Every analyst or operator action that changes what the agent learns from or serves (a label
given or released, a model version activated or rolled back, a reference version rolled back
or a drift window approved) and the agent's own automatic moves (labels held or used by
adaptation, the version it activates) write one ``audit_log`` row with :func:`record_audit`,
on the connection of the change, inside its transaction: a change never commits without its
row, and a change that fails leaves none.

The log is append-only: the store offers :meth:`AuditStore.list_audit` and nothing that
updates or deletes a row, retention (``Store.purge_older_than``) keeps every row, and the
database's own triggers (migration 0007) refuse any UPDATE, DELETE or TRUNCATE of the table.
An operator who must prune it lifts the trigger explicitly, in SQL (docs/RELIABILITY.md).

Rows never hold secrets: ``actor`` is the name a person gave, ``origin`` a client address or
``user@host``, ``detail`` a few values the caller chose (never request headers or tokens).
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, select

from storage.models import Base
from storage.records import (
    AUDIT_ACTIONS,
    MAX_ACTOR_CHARS,
    MAX_AUDIT_ORIGIN_CHARS,
    MAX_AUDIT_TARGET_CHARS,
    AuditEntry,
)

_AUDIT: Table = Base.metadata.tables["audit_log"]

#: the actor of what the agent does on its own (adaptation, the first model version)
AGENT_ACTOR = "agent"


def agent_origin() -> str:
    """``agent:<hostname>``: the origin of what an agent process does on its own."""
    return f"agent:{socket.gethostname()}"


def cli_origin() -> str:
    """``cli:<os user>@<hostname>``: the origin of a ``metasentry`` command."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER: still say where it ran
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def record_audit(connection: Connection, *, actor: str, action: str, target: str,
                 origin: str | None, detail: Mapping[str, Any] | None = None,
                 now: datetime | None = None) -> None:
    """Append one row, on ``connection`` (so in the caller's transaction).

    ``origin=None`` means the change was made by this process on its own: ``agent:<host>``.
    """
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"audit action must be one of {list(AUDIT_ACTIONS)}, got {action!r}.")
    connection.execute(_AUDIT.insert().values(
        at=now or datetime.now(UTC), actor=actor[:MAX_ACTOR_CHARS], action=action,
        target=target[:MAX_AUDIT_TARGET_CHARS],
        origin=(origin or agent_origin())[:MAX_AUDIT_ORIGIN_CHARS], detail=dict(detail or {})))


class AuditStore:
    """Reading the audit log; mixed into :class:`storage.Store`. There is no update or delete."""

    _session: Callable[..., AbstractContextManager[Connection]]

    def list_audit(self, *, limit: int = 100, action: str | None = None,
                   actor: str | None = None, since: datetime | None = None,
                   before_id: int | None = None) -> list[AuditEntry]:
        """Newest first; ``since`` (timezone-aware) keeps rows at or after it; page with
        ``before_id`` = the last id of the previous page."""
        if not 1 <= limit <= 10_000:
            raise ValueError(f"limit must be between 1 and 10000, got {limit}.")
        if action is not None and action not in AUDIT_ACTIONS:
            raise ValueError(f"action must be one of {list(AUDIT_ACTIONS)}, got {action!r}.")
        if since is not None and since.utcoffset() is None:
            raise ValueError(f"since must be timezone-aware (UTC), got naive {since.isoformat()}.")
        query = select(_AUDIT).order_by(_AUDIT.c.id.desc()).limit(limit)
        if action is not None:
            query = query.where(_AUDIT.c.action == action)
        if actor is not None:
            query = query.where(_AUDIT.c.actor == actor)
        if since is not None:
            query = query.where(_AUDIT.c.at >= since)
        if before_id is not None:
            query = query.where(_AUDIT.c.id < before_id)
        with self._session("list_audit") as connection:
            return [AuditEntry(id=row.id, at=row.at, actor=row.actor, action=row.action,
                               target=row.target, origin=row.origin, detail=dict(row.detail))
                    for row in connection.execute(query)]
