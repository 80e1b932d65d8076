"""``GET /v1/audit``: who changed what the agent believes, from where (``storage.audit``).

A read (the token when reads need one). There is no write route: rows are appended by the
changes they record, never through the API. The route follows the conventions of
:mod:`agent.api`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from agent.api_inputs import ActorText, IdQuery
from agent.api_model import RouterFactory
from agent.service import Agent

AuditAction = Literal["label.add", "label.hold", "label.release", "label.use", "label.reject",
                      "model.activate", "model.rollback", "reference.rollback",
                      "reference.approve"]  # storage.AUDIT_ACTIONS (a test keeps them equal)


def audit_routes(agent: Agent, router: RouterFactory, *, reads_need_token: bool
                 ) -> list[APIRouter]:
    reads = router(needs_token=reads_need_token, prefix="/v1/audit", tags=["audit"])

    @reads.get("")
    def list_audit(
        action: Annotated[AuditAction | None, Query()] = None,
        actor: Annotated[ActorText | None, Query()] = None,
        since: Annotated[datetime | None, Query(
            description="ISO 8601; without an offset it is read as UTC.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before_id: IdQuery = None,
    ) -> dict[str, Any]:
        """Audit rows, newest first; page with ``before_id`` = the last id of the previous
        page."""
        if since is not None:
            since = _as_utc(since)
        rows = agent.store.list_audit(action=action, actor=actor, since=since, limit=limit,
                                      before_id=before_id)
        return {"audit": [r.to_dict() for r in rows],
                "next_before_id": rows[-1].id if len(rows) == limit else None}

    return [reads]


def _as_utc(since: datetime) -> datetime:
    """``since`` in UTC (read as UTC without an offset).

    A time UTC cannot hold (year 1 or 9999 with an offset that leaves the range) is before or
    after every row there can be, so it is read as the earliest or latest time UTC holds: the
    answer is every row, or none, as the filter says.
    """
    try:
        return since.astimezone(UTC) if since.utcoffset() is not None else since.replace(
            tzinfo=UTC)
    except OverflowError:
        edge = datetime.min if since.year == datetime.min.year else datetime.max
        return edge.replace(tzinfo=UTC)
