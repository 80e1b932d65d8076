"""The REST API of reference versions: ``GET /v1/references[/{id}]`` and a rollback.

Reads need the token when reads do; ``POST /v1/references/rollback`` always does. Approving a
drift window is a label (``POST /v1/incidents/{id}/label`` with ``benign_drift``), so there is
one way to say "this is normal". The routes follow the conventions of :mod:`agent.api`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from agent.api_errors import documented
from agent.api_inputs import (
    DetectorFilter,
    ReferenceIdPath,
    ReferenceRollbackRequest,
    SourceFilter,
    api_origin,
)
from agent.api_model import RouterFactory
from agent.service import Agent
from storage import ReferenceVersionNotFound


def reference_routes(agent: Agent, router: RouterFactory, *, reads_need_token: bool
                     ) -> list[APIRouter]:
    reads = router(needs_token=reads_need_token, prefix="/v1/references", tags=["references"])
    writes = router(needs_token=True, prefix="/v1/references", tags=["references"])

    @reads.get("")
    def list_references(
        source: Annotated[SourceFilter | None, Query()] = None,
        detector: Annotated[DetectorFilter | None, Query()] = None,
        candidates: Annotated[bool, Query()] = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Versions per source and detector, newest first; ``candidates`` for drift windows
        kept for approval."""
        rows = agent.store.list_references(source=source, detector=detector,
                                           candidates=candidates, limit=limit)
        return {"mode": agent.config.reference.mode, "references": [r.to_dict() for r in rows]}

    @reads.get("/{reference_id}", responses=documented(404))
    def get_reference(reference_id: ReferenceIdPath) -> dict[str, Any]:
        try:
            return agent.store.get_reference(reference_id).to_dict()
        except ReferenceVersionNotFound as exc:
            raise HTTPException(404, f"no reference version {reference_id}") from exc

    @writes.post("/rollback", responses=documented(404, 409))
    def rollback(body: ReferenceRollbackRequest, request: Request) -> dict[str, Any]:
        """Make version ``version`` active again, as a new version (history is kept)."""
        try:
            row = agent.store.rollback_reference(body.source, body.detector, body.version,
                                                 actor=body.actor, note=body.note,
                                                 origin=api_origin(request))
        except ReferenceVersionNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc
        return row.to_dict()

    return [reads, writes]
