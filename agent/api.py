"""The REST API: health, readiness, incidents, and labelling.

Secure by default: every route that writes requires the bearer token named by
``api.token_env``; without a configured token the write routes refuse every request rather
than fall open. Reads need the token too when ``api.read_requires_token`` is set. Tokens are
compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from agent.service import Agent
from agent.version import __version__
from storage import IncidentNotFound

INCIDENT_STATUSES = ("open", "labelled", "dismissed", "resolved")
_bearer = HTTPBearer(auto_error=False, description="The token from the environment variable "
                     "named by api.token_env in agent.yaml.")


class LabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=200, description="The class the analyst assigns.")
    actor: str = Field(default="api", min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=2000)


def create_app(agent: Agent) -> FastAPI:
    """The FastAPI application bound to one running agent."""
    app = FastAPI(title="MetaSentry", version=__version__)
    expected = agent.config.api_token

    def _check(credentials: HTTPAuthorizationCredentials | None) -> None:
        token = expected()
        if token is None:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"write routes are disabled: set {agent.config.api.token_env}")
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    def require_write(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        _check(credentials)

    def require_read(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if agent.config.api.read_requires_token:
            _check(credentials)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, Any]:
        """Liveness: the process answers. Restart only if this fails."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """Readiness: reference fitted, database reachable, migrations at head."""
        checks = agent.readiness()
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks},
                              status_code=200 if ready else 503)

    @app.get("/v1/incidents", tags=["incidents"], dependencies=[Depends(require_read)])
    def list_incidents(
        kind: str | None = None,
        status_: Annotated[str | None, Query(alias="status")] = None,
        source: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        before_id: Annotated[int | None, Query(ge=1)] = None,
    ) -> dict[str, Any]:
        """Newest first; page with ``before_id`` = the last id of the previous page."""
        if status_ is not None and status_ not in INCIDENT_STATUSES:
            raise HTTPException(422, f"status: expected one of {', '.join(INCIDENT_STATUSES)}")
        rows = agent.store.list_incidents(kind=kind, status=status_, source=source, limit=limit,
                                          before_id=before_id)
        return {"incidents": [r.to_dict() for r in rows],
                "next_before_id": rows[-1].id if len(rows) == limit else None}

    @app.get("/v1/incidents/{incident_id}", tags=["incidents"],
             dependencies=[Depends(require_read)])
    def get_incident(incident_id: int) -> dict[str, Any]:
        try:
            return agent.store.get_incident(incident_id).to_dict()
        except IncidentNotFound as exc:
            raise HTTPException(404, f"no incident {incident_id}") from exc

    @app.post("/v1/incidents/{incident_id}/label", tags=["incidents"],
              dependencies=[Depends(require_write)])
    def label_incident(incident_id: int, body: LabelRequest) -> dict[str, Any]:
        """Record the analyst's class for an incident (the adaptation loop learns from these)."""
        try:
            incident = agent.store.label_incident(incident_id, body.label, actor=body.actor,
                                                  note=body.note)
        except IncidentNotFound as exc:
            raise HTTPException(404, f"no incident {incident_id}") from exc
        return incident.to_dict()

    return app
