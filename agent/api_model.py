"""The REST API of the analyst loop: labels, adaptation, and the model registry.

``GET /v1/labels`` and ``GET /v1/models[/{version}]`` read (token when reads need one);
``POST /v1/labels/{id}/release``, ``POST /v1/adapt``, ``POST /v1/models/{version}/activate``
and ``POST /v1/models/rollback`` write (token always; the last two take an optional
``{"actor": ...}`` for the audit log). The routes follow the conventions of
:mod:`agent.api` (routers from ``router()``, inputs typed in :mod:`agent.api_inputs`, errors
documented); a request the state of the agent cannot satisfy is a 409 that says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request

from agent.api_errors import documented
from agent.api_inputs import (
    AdaptRequest,
    IdQuery,
    LabelIdPath,
    ModelChangeRequest,
    ReleaseRequest,
    VersionPath,
    api_origin,
)
from agent.service import Agent
from storage import LabelNotFound, ModelVersionNotFound

LabelStatus = Literal["pending", "held", "released", "used", "rejected", "noted"]
RouterFactory = Callable[..., APIRouter]


def label_routes(agent: Agent, router: RouterFactory, *, reads_need_token: bool
                 ) -> list[APIRouter]:
    reads = router(needs_token=reads_need_token, prefix="/v1/labels", tags=["labels"])
    writes = router(needs_token=True, prefix="/v1/labels", tags=["labels"])

    @reads.get("")
    def list_labels(
        status: Annotated[LabelStatus | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        since_id: IdQuery = None,
    ) -> dict[str, Any]:
        """Labels, oldest first, with their status; page with ``since_id``."""
        rows = agent.store.list_labels(status=status, limit=limit, since_id=since_id)
        return {"labels": [r.to_dict() for r in rows],
                "next_since_id": rows[-1].id if len(rows) == limit else None}

    @writes.post("/{label_id}/release", responses=documented(404, 409))
    def release_label(label_id: LabelIdPath, body: ReleaseRequest, request: Request
                      ) -> dict[str, Any]:
        """Override screening: a held (or rejected) label teaches at the next adaptation."""
        try:
            label = agent.store.release_label(label_id, actor=body.actor,
                                              origin=api_origin(request))
        except LabelNotFound as exc:
            raise HTTPException(404, f"no label {label_id}") from exc
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc
        agent.adapt_soon("labels: released through the API")
        return label.to_dict()

    return [reads, writes]


def adaptation_routes(agent: Agent, router: RouterFactory) -> list[APIRouter]:
    writes = router(needs_token=True, prefix="/v1", tags=["models"])

    @writes.post("/adapt", responses=documented(409))
    def adapt(body: AdaptRequest | None = None) -> dict[str, Any]:
        """Screen pending labels, build, check and (if it passes) activate a new version."""
        if agent.adapter is None:
            raise HTTPException(409, "the live model is off (model.enabled: false)")
        outcome = agent.adapter.run("api: POST /v1/adapt",
                                    force=bool(body and body.force))
        return outcome.to_dict()

    return [writes]


def model_routes(agent: Agent, router: RouterFactory, *, reads_need_token: bool
                 ) -> list[APIRouter]:
    reads = router(needs_token=reads_need_token, prefix="/v1/models", tags=["models"])
    writes = router(needs_token=True, prefix="/v1/models", tags=["models"])

    @reads.get("")
    def list_models() -> dict[str, Any]:
        """Every registered version, newest first, and the one serving in this process."""
        serving = agent.runtime.version.version if agent.runtime and agent.runtime.version \
            else None
        return {"serving": serving,
                "versions": [v.to_dict() for v in agent.store.list_model_versions()]}

    @reads.get("/{version}", responses=documented(404))
    def get_model(version: VersionPath) -> dict[str, Any]:
        try:
            return agent.store.get_model_version(version).to_dict()
        except ModelVersionNotFound as exc:
            raise HTTPException(404, f"no model version {version}") from exc

    @writes.post("/rollback", responses=documented(409))
    def rollback(request: Request, body: ModelChangeRequest | None = None) -> dict[str, Any]:
        """Serve the version the active one replaced."""
        actor, origin = (body or ModelChangeRequest()).actor, api_origin(request)
        return _operate(agent, lambda runtime: runtime.rollback(actor=actor, origin=origin))

    @writes.post("/{version}/activate", responses=documented(404, 409))
    def activate(version: VersionPath, request: Request,
                 body: ModelChangeRequest | None = None) -> dict[str, Any]:
        """Serve ``version`` (it must rebuild to its recorded sha256); one transaction."""
        actor, origin = (body or ModelChangeRequest()).actor, api_origin(request)
        return _operate(agent, lambda runtime: runtime.activate(version, actor=actor,
                                                                origin=origin))

    return [reads, writes]


def _operate(agent: Agent, action: Callable[[Any], Any]) -> dict[str, Any]:
    from agent.model_runtime import ModelLoadError

    if agent.runtime is None:
        raise HTTPException(409, "the live model is off (model.enabled: false)")
    try:
        return dict(action(agent.runtime).to_dict())
    except ModelVersionNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except ModelLoadError as exc:
        raise HTTPException(409, str(exc)) from exc
