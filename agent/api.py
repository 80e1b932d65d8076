"""The REST API: health, readiness, incidents, labels, adaptation, the model registry,
reference versions, the audit log and HTTP ingest (:mod:`agent.api_ingest`).

Secure by default: every write needs the bearer token named by ``api.token_env``; without a
configured token writes are refused rather than fall open. Reads need the token too when
``api.read_requires_token`` is set, the documentation (``/docs``, ``/redoc``,
``/openapi.json``) included. :class:`agent.api_guard.ApiGuard` enforces both, and the body
size cap, before any body is read; routes only declare the answers they may give.

Adding a route: put it on a router from :func:`_router` (``needs_token=True`` for writes,
``api.read_requires_token`` for reads), so the schema documents the answers ApiGuard gives
and unknown query parameters are refused; add ``responses=documented(404)`` where it
applies; type text and ids with :mod:`agent.api_inputs` (a body model with
``extra="forbid"``); include the router in :func:`create_app`. Never change state on GET:
only write methods always need the token. Every error is JSON (:mod:`agent.api_errors`).
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer

from agent.api_audit import audit_routes
from agent.api_errors import SafeJSONResponse, documented, install_error_handlers
from agent.api_guard import ApiGuard
from agent.api_ingest import ingest_routes
from agent.api_inputs import (
    IdPath,
    IdQuery,
    KindFilter,
    LabelRequest,
    SourceFilter,
    api_origin,
    known_query_only,
)
from agent.api_model import adaptation_routes, label_routes, model_routes
from agent.api_reference import reference_routes
from agent.service import Agent
from agent.version import __version__
from storage import IncidentNotFound

PROBE_PATHS = ("/healthz", "/readyz")
IncidentStatus = Literal["open", "labelled", "dismissed", "resolved"]
INCIDENT_STATUSES: tuple[str, ...] = get_args(IncidentStatus)

# Only documents the scheme in the OpenAPI schema (Swagger's "Authorize" button); ApiGuard
# is what enforces it.
_bearer = HTTPBearer(auto_error=False, description="The token from the environment variable "
                     "named by api.token_env in agent.yaml.")

# --- the application -----------------------------------------------------------------------


def create_app(agent: Agent) -> FastAPI:
    """The FastAPI application bound to one running agent."""
    api = agent.config.api
    app = FastAPI(title="MetaSentry", version=__version__,
                  default_response_class=SafeJSONResponse, responses=documented(400, 413))
    install_error_handlers(app)
    app.add_middleware(ApiGuard, token=agent.config.api_token, token_env=api.token_env,
                       reads_need_token=api.read_requires_token, open_paths=PROBE_PATHS,
                       max_body_bytes=api.max_body_bytes)
    app.include_router(_health_routes(agent))
    app.include_router(_incident_reads(agent, needs_token=api.read_requires_token))
    app.include_router(_incident_writes(agent))
    for router in (*label_routes(agent, _router, reads_need_token=api.read_requires_token),
                   *adaptation_routes(agent, _router),
                   *model_routes(agent, _router, reads_need_token=api.read_requires_token),
                   *reference_routes(agent, _router, reads_need_token=api.read_requires_token),
                   *audit_routes(agent, _router, reads_need_token=api.read_requires_token),
                   *ingest_routes(agent, _router)):
        app.include_router(router)
    return app


def _router(*, needs_token: bool, prefix: str = "", tags: list[str | Enum] | None = None
            ) -> APIRouter:
    """A router whose OpenAPI entries say what ApiGuard enforces on its routes.

    Writes always need the token; reads when ``api.read_requires_token`` is set. The bearer
    dependency never refuses anything itself: it puts the scheme into the schema.
    """
    if needs_token:
        return APIRouter(prefix=prefix, tags=tags,
                         dependencies=[Depends(_bearer), Depends(known_query_only)],
                         responses=documented(401, 403, 422, 503))
    return APIRouter(prefix=prefix, tags=tags, dependencies=[Depends(known_query_only)],
                     responses=documented(422, 503))


def _health_routes(agent: Agent) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Liveness: the process answers. Restart only if this fails."""
        return {"status": "ok", "version": __version__}

    @router.get("/readyz", responses={503: {"description": "Not ready; `checks` says why."}})
    def readyz() -> JSONResponse:
        """Readiness: reference fitted, database reachable, migrations at head (and, with a
        Redis source, its server reachable)."""
        checks = agent.readiness()
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks},
                            status_code=200 if ready else 503)

    return router


def _incident_reads(agent: Agent, *, needs_token: bool) -> APIRouter:
    router = _router(needs_token=needs_token, prefix="/v1/incidents", tags=["incidents"])

    @router.get("")
    def list_incidents(
        kind: Annotated[KindFilter | None, Query()] = None,
        status_: Annotated[IncidentStatus | None, Query(alias="status")] = None,
        source: Annotated[SourceFilter | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        before_id: IdQuery = None,
    ) -> dict[str, Any]:
        """Newest first; page with ``before_id`` = the last id of the previous page."""
        rows = agent.store.list_incidents(kind=kind, status=status_, source=source, limit=limit,
                                          before_id=before_id)
        return {"incidents": [r.to_dict() for r in rows],
                "next_before_id": rows[-1].id if len(rows) == limit else None}

    @router.get("/{incident_id}", responses=documented(404))
    def get_incident(incident_id: IdPath) -> dict[str, Any]:
        try:
            return agent.store.get_incident(incident_id).to_dict()
        except IncidentNotFound as exc:
            raise HTTPException(404, f"no incident {incident_id}") from exc

    return router


def _incident_writes(agent: Agent) -> APIRouter:
    router = _router(needs_token=True, prefix="/v1/incidents", tags=["incidents"])

    @router.post("/{incident_id}/label", responses=documented(404))
    def label_incident(incident_id: IdPath, body: LabelRequest, request: Request
                       ) -> dict[str, Any]:
        """Record the analyst's class for an incident's example records (all, or ``records``).

        Each labelled record becomes a pending label; once a class has
        ``adaptation.min_labels`` of them, the agent adapts right away.
        """
        try:
            incident, labels = agent.store.apply_label(incident_id, body.label,
                                                       actor=body.actor, note=body.note,
                                                       records=body.records,
                                                       origin=api_origin(request))
        except IncidentNotFound as exc:
            raise HTTPException(404, f"no incident {incident_id}") from exc
        except ValueError as exc:
            raise HTTPException(404, str(exc)) from exc
        agent.metrics.labels.labels("received").inc(len(labels))
        agent.adapt_soon("labels: API")
        return incident.to_dict() | {"labels": [label.to_dict() for label in labels]}

    return router
