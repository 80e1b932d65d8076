"""API authorisation and readiness, through FastAPI's test client on a prepared agent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agent.api import create_app
from agent.config import load_config
from agent.service import Agent
from storage import NewIncident


def _agent(write_config: Callable[..., Path], **overrides: object) -> Agent:
    agent = Agent(load_config(write_config(**overrides), need_token=False))
    agent.prepare()
    agent.store.commit_batch(source="s", position=None, incidents=[
        NewIncident(kind="drift", severity="medium", source="s", offset_key=f"k{i}",
                    detector="feature_drift", p_value=0.001, explanation={"summary": "x"})
        for i in range(3)])
    return agent


def test_writes_refused_without_configured_token(write_config: Callable[..., Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METASENTRY_API_TOKEN", raising=False)
    client = TestClient(create_app(_agent(write_config)))
    response = client.post("/v1/incidents/1/label", json={"label": "x"},
                           headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403
    assert "METASENTRY_API_TOKEN" in response.json()["detail"]


def test_reads_can_require_the_token(write_config: Callable[..., Path],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METASENTRY_API_TOKEN", "tok")
    client = TestClient(create_app(_agent(write_config, **{"api.read_requires_token": True})))
    assert client.get("/v1/incidents").status_code == 401
    ok = client.get("/v1/incidents", headers={"Authorization": "Bearer tok"})
    assert ok.status_code == 200 and len(ok.json()["incidents"]) == 3
    assert client.get("/healthz").status_code == 200  # probes never need a token


def test_pagination_and_validation(write_config: Callable[..., Path],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METASENTRY_API_TOKEN", "tok")
    client = TestClient(create_app(_agent(write_config)))
    first = client.get("/v1/incidents", params={"limit": 2}).json()
    assert len(first["incidents"]) == 2 and first["next_before_id"] is not None
    rest = client.get("/v1/incidents", params={"before_id": first["next_before_id"]}).json()
    assert len(rest["incidents"]) == 1
    assert client.get("/v1/incidents", params={"status": "bogus"}).status_code == 422
    bad_body = client.post("/v1/incidents/1/label", json={"label": ""},
                           headers={"Authorization": "Bearer tok"})
    assert bad_body.status_code == 422


def test_readyz_reports_each_check(write_config: Callable[..., Path]) -> None:
    agent = _agent(write_config)
    client = TestClient(create_app(agent))
    assert client.get("/readyz").json()["ready"] is True
    agent.store.close()
    unprepared = Agent(agent.config)
    body = TestClient(create_app(unprepared)).get("/readyz")
    assert body.status_code == 503
    assert body.json()["checks"]["reference_fitted"] is False
