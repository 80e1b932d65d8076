"""The audit log through the API and the command line: each write records who and from where
(``api:<client ip>``, ``cli:<user>@<host>``), and ``GET /v1/audit`` / ``metasentry audit``
list and filter it. The live model is the knn learner (nothing to train), so model versions
are activated and rolled back through the real runtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import get_args

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from agent.api import create_app
from agent.api_audit import AuditAction
from agent.cli import main
from agent.config import load_config
from agent.service import Agent
from storage import AUDIT_ACTIONS, IncidentExample, NewIncident, NewReferenceVersion, Store
from storage.audit import agent_origin, cli_origin
from tests.pg import private_schema_url

TOKEN = "audit-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
API_ORIGIN = "api:testclient"  # the client address Starlette's TestClient connects from


def _knn(write_config: Callable[..., Path], **overrides: object) -> Path:
    return write_config(**{"model.enabled": True, "model.learner": "knn", **overrides})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def agent(request: pytest.FixtureRequest, write_config: Callable[..., Path],
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Agent]:
    monkeypatch.setenv("METASENTRY_API_TOKEN", TOKEN)
    with contextlib.ExitStack() as stack:
        overrides = ({} if request.param == "sqlite" else
                     {"storage.url": stack.enter_context(private_schema_url("metasentry_au"))})
        live = Agent(load_config(_knn(write_config, **overrides), need_token=False))
        live.prepare()
        stack.callback(live.close)
        yield live


def _seed(store: Store) -> int:
    """An incident with two example records, a second model version, two reference versions."""
    result = store.commit_batch(
        source="s", position=None,
        incidents=[NewIncident(kind="novel", severity="high", source="s", offset_key="k",
                               detector="classifier")],
        examples=[IncidentExample(source="s", incident_offset_key="k", detector="classifier",
                                  offset_key=f"k:{i}", ordinal=i, fields={"a": i},
                                  textual=False, features=[float(i)]) for i in range(2)],
        references=[NewReferenceVersion(
            source="s", detector="drift", origin="initial" if v == 1 else "rolling",
            data=f"v{v}".encode(), sha256=hashlib.sha256(f"v{v}".encode()).hexdigest(),
            n_records=3, summary={"applied_candidates": []}, version=v,
            parent=None if v == 1 else 1) for v in (1, 2)])
    first = store.get_model_version("1")
    # Version 2 has the inputs of version 1 (no labels), so it rebuilds to its sha256.
    store.add_model_version(version="2", algorithm=first.algorithm, path=first.path,
                            sha256=first.sha256, metrics={}, parent="1",
                            base_sha256=first.base_sha256, benign_class=first.benign_class,
                            classes=first.classes, label_ids=[], trigger="test",
                            settings=first.settings)
    return result.created_ids[0]


def test_api_writes_record_the_actor_and_the_client_address(agent: Agent) -> None:
    client = TestClient(create_app(agent))
    incident = _seed(agent.store)

    labelled = client.post(f"/v1/incidents/{incident}/label", headers=AUTH,
                           json={"label": "neptune", "actor": "ana", "records": ["k:0"]})
    assert labelled.status_code == 200, labelled.text
    label_id = labelled.json()["labels"][0]["id"]
    agent.store.set_label_status([label_id], "held", reason="test")
    assert client.post(f"/v1/labels/{label_id}/release", headers=AUTH,
                       json={"actor": "lead"}).status_code == 200
    assert client.post("/v1/models/2/activate", headers=AUTH,
                       json={"actor": "ops"}).status_code == 200
    assert client.post("/v1/models/rollback", headers=AUTH).status_code == 200
    assert client.post("/v1/references/rollback", headers=AUTH, json={
        "source": "s", "detector": "drift", "version": 1, "actor": "ana"}).status_code == 200

    rows = [r for r in client.get("/v1/audit").json()["audit"] if r["origin"] != agent_origin()]
    assert [(r["actor"], r["action"], r["target"], r["origin"]) for r in rows] == [
        ("ana", "reference.rollback", "reference:s/drift/v3", API_ORIGIN),
        ("api", "model.rollback", "model:1", API_ORIGIN),
        ("ops", "model.activate", "model:2", API_ORIGIN),
        ("lead", "label.release", f"label:{label_id}", API_ORIGIN),
        ("ana", "label.add", f"incident:{incident}", API_ORIGIN),
    ]
    assert TOKEN not in json.dumps(client.get("/v1/audit").json())  # never a secret


def test_api_lists_and_filters_the_log_under_the_read_rule(
        write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METASENTRY_API_TOKEN", TOKEN)
    live = Agent(load_config(_knn(write_config, **{"api.read_requires_token": True}),
                             need_token=False))
    live.prepare()
    try:
        incident = _seed(live.store)
        for actor in ("ana", "bob"):
            live.store.apply_label(incident, "x", actor=actor, origin="api:10.0.0.1")
        client = TestClient(create_app(live))
        assert client.get("/v1/audit").status_code == 401
        everything = client.get("/v1/audit", headers=AUTH).json()
        # version 1 (the agent's own activation at first start) and the two labels
        assert [r["action"] for r in everything["audit"]] == [
            "label.add", "label.add", "model.activate"]
        assert everything["audit"][-1]["actor"] == "agent"
        by_actor = client.get("/v1/audit", headers=AUTH, params={"actor": "bob"}).json()
        assert [r["actor"] for r in by_actor["audit"]] == ["bob"]
        by_action = client.get("/v1/audit", headers=AUTH,
                               params={"action": "model.activate"}).json()
        assert [r["target"] for r in by_action["audit"]] == ["model:1"]
        page = client.get("/v1/audit", headers=AUTH, params={"limit": 2}).json()
        assert len(page["audit"]) == 2 and page["next_before_id"] is not None
        rest = client.get("/v1/audit", headers=AUTH,
                          params={"before_id": page["next_before_id"]}).json()
        assert [r["action"] for r in rest["audit"]] == ["model.activate"]
        assert client.get("/v1/audit", headers=AUTH,
                          params={"since": "2999-01-01T00:00:00"}).json()["audit"] == []
        assert len(client.get("/v1/audit", headers=AUTH,
                              params={"since": "2000-01-01T00:00:00+00:00"}).json()["audit"]) == 3
        assert client.get("/v1/audit", headers=AUTH,
                          params={"action": "label.delete"}).status_code == 422
        # Before or after anything UTC can hold: every row, or none (never a 422 the schema
        # does not describe, found by schemathesis).
        assert len(client.get("/v1/audit", headers=AUTH, params={
            "since": "0001-01-01T00:00:00+05:00"}).json()["audit"]) == 3
        assert client.get("/v1/audit", headers=AUTH, params={
            "since": "9999-12-31T23:59:59-05:00"}).json()["audit"] == []
        assert client.get("/v1/audit", headers=AUTH, params={"bogus": 1}).status_code == 422
        for method in ("post", "put", "patch", "delete"):  # no way to write or remove rows
            assert getattr(client, method)("/v1/audit", headers=AUTH).status_code == 405
    finally:
        live.close()


def test_cli_writes_record_the_user_and_host(write_config: Callable[..., Path]) -> None:
    path = _knn(write_config)
    live = Agent(load_config(path, need_token=False))
    live.prepare()
    incident = _seed(live.store)
    live.close()
    runner = CliRunner()
    config = ["--config", str(path)]

    for args in (["label", *config, "--actor", "ana", str(incident), "neptune"],
                 ["models", "activate", *config, "--actor", "ops", "2"],
                 ["models", "rollback", *config, "--actor", "ops"],
                 ["reference", "rollback", *config, "--source", "s", "--detector", "drift",
                  "--to", "1", "--actor", "ana"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
    with Store(load_config(path, need_token=False).storage_url()) as store:
        label_id = store.list_labels()[0].id
        store.set_label_status([label_id], "held", reason="test")
    released = runner.invoke(main, ["labels", "release", *config, "--actor", "lead",
                                    str(label_id)])
    assert released.exit_code == 0, released.output

    listed = runner.invoke(main, ["audit", *config, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [r for r in json.loads(listed.stdout) if r["actor"] != "agent"]
    assert [(r["actor"], r["action"], r["target"], r["origin"]) for r in rows] == [
        ("lead", "label.release", f"label:{label_id}", cli_origin()),
        ("ana", "reference.rollback", "reference:s/drift/v3", cli_origin()),
        ("ops", "model.rollback", "model:1", cli_origin()),
        ("ops", "model.activate", "model:2", cli_origin()),
        ("ana", "label.add", f"incident:{incident}", cli_origin()),
    ]


def test_cli_lists_filters_and_fails_in_one_line(write_config: Callable[..., Path]) -> None:
    path = _knn(write_config)
    live = Agent(load_config(path, need_token=False))
    live.prepare()
    incident = _seed(live.store)
    for actor in ("ana", "bob"):
        live.store.apply_label(incident, "x", actor=actor, origin="cli:t@h")
    live.close()
    runner = CliRunner()
    config = ["--config", str(path)]

    table = runner.invoke(main, ["audit", *config])
    assert table.exit_code == 0 and "ACTION" in table.output
    assert table.output.count("label.add") == 2 and "model.activate" in table.output
    by_actor = json.loads(runner.invoke(main, ["audit", *config, "--json", "--actor", "bob"]
                                        ).stdout)
    assert [r["actor"] for r in by_actor] == ["bob"]
    by_action = json.loads(runner.invoke(main, ["audit", *config, "--json", "--action",
                                                "model.activate"]).stdout)
    assert [r["target"] for r in by_action] == ["model:1"]
    limited = json.loads(runner.invoke(main, ["audit", *config, "--json", "--limit", "1"]
                                       ).stdout)
    assert len(limited) == 1 and limited[0]["actor"] == "bob"
    later = runner.invoke(main, ["audit", *config, "--since", "2999-01-01"])
    assert later.exit_code == 0 and "no audit rows" in later.output
    assert len(json.loads(runner.invoke(main, ["audit", *config, "--json", "--since",
                                               "2000-01-01T00:00:00Z"]).stdout)) == 3

    bad = runner.invoke(main, ["audit", *config, "--since", "yesterday"])
    assert bad.exit_code == 2
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: --since")
    overflow = runner.invoke(main, ["audit", *config, "--since", "9999-12-31T23:59:59-05:00"])
    assert overflow.exit_code == 2 and overflow.stderr.startswith("error: --since")
    assert runner.invoke(main, ["audit", *config, "--action", "label.delete"]).exit_code == 2


def test_the_api_knows_every_audit_action() -> None:
    assert get_args(AuditAction) == AUDIT_ACTIONS
