"""The analyst loop through its two interfaces: the REST API and the command line.

Label an incident's records, see the labels, adapt, list and activate versions, roll back,
release a held label — as a user of ``metasentry`` or of ``/v1`` would, on a live model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from agent.api import create_app
from agent.cli import main
from agent.config import load_config
from agent.service import Agent
from tests.integration.live_stream import incident_with_examples, of_class, sample_lines

TOKEN = "analyst-loop-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _incident_of(agent: Agent, label: str, key: str, count: int = 6) -> int:
    return incident_with_examples(agent, of_class(sample_lines(), label)[:count], key)


@pytest.fixture
def live(write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[tuple[Agent, Path]]:
    monkeypatch.setenv("METASENTRY_API_TOKEN", TOKEN)
    path = write_config(live_model=True)
    agent = Agent(load_config(path, need_token=False))
    agent.prepare()
    yield agent, path
    agent.close()


def test_the_api_labels_adapts_lists_activates_and_rolls_back(live: tuple[Agent, Path]
                                                              ) -> None:
    agent, _ = live
    client = TestClient(create_app(agent))
    incident = _incident_of(agent, "apache2", "apache")
    records = [r.offset_key for r in agent.store.incident_records(incident)][:5]

    assert client.post(f"/v1/incidents/{incident}/label", json={"label": "apache2"}
                       ).status_code == 401
    answer = client.post(f"/v1/incidents/{incident}/label", headers=AUTH,
                         json={"label": "apache2", "actor": "ana", "records": records})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["analyst_label"] == "apache2" and len(body["labels"]) == 5
    assert {label["status"] for label in body["labels"]} <= {"pending", "used"}
    unknown = client.post(f"/v1/incidents/{incident}/label", headers=AUTH,
                          json={"label": "apache2", "records": ["no-such-record"]})
    assert unknown.status_code == 404

    outcome = client.post("/v1/adapt", headers=AUTH, json={"force": True}).json()
    if outcome["status"] != "activated":  # the label route may have adapted already
        assert outcome["status"] in ("nothing_pending", "busy"), outcome
        for _ in range(100):
            if agent.runtime is not None and agent.runtime.version is not None and \
                    agent.runtime.version.version != "1":
                break
            time.sleep(0.1)
    models = client.get("/v1/models").json()
    assert models["serving"] == "2"
    assert [v["status"] for v in models["versions"]] == ["active", "retired"]
    assert "apache2" in client.get("/v1/models/2").json()["classes"]
    assert client.get("/v1/models/99").status_code == 404
    labels = client.get("/v1/labels", params={"status": "used"}).json()["labels"]
    assert len(labels) == 5 and {label["model_version"] for label in labels} == {"2"}

    back = client.post("/v1/models/rollback", headers=AUTH)
    assert back.status_code == 200 and back.json()["version"] == "1"
    assert agent.runtime is not None and agent.runtime.version is not None
    assert agent.runtime.version.version == "1"
    again = client.post("/v1/models/2/activate", headers=AUTH)
    assert again.status_code == 200 and agent.runtime.version.version == "2"
    assert client.post("/v1/models/1/activate").status_code == 401
    assert client.post("/v1/models/99/activate", headers=AUTH).status_code == 404
    assert client.post("/v1/labels/1/release", headers=AUTH, json={}).status_code == 409


def test_the_command_line_walks_the_readme_loop(live: tuple[Agent, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    agent, path = live
    incident = _incident_of(agent, "apache2", "apache", count=5)
    benign_looking = _incident_of(agent, "normal", "benign", count=3)
    runner = CliRunner()
    config = ["--config", str(path)]

    labelled = runner.invoke(main, ["label", *config, "--actor", "ana", str(incident),
                                    "apache2"])
    assert labelled.exit_code == 0, labelled.output
    assert "5 record(s) will teach the model" in labelled.output
    listed = runner.invoke(main, ["labels", "list", *config])
    assert listed.exit_code == 0 and listed.output.count("pending") == 5

    # A label its neighbours contradict: typical benign records called an attack class.
    runner.invoke(main, ["label", *config, "--actor", "mallory", str(benign_looking),
                         "neptune"])
    adapted = runner.invoke(main, ["adapt", *config])
    assert adapted.exit_code == 0, adapted.output
    assert "adaptation: activated (version 2)" in adapted.output
    assert "held: neighbours" in adapted.output

    versions = runner.invoke(main, ["models", "list", *config])
    assert versions.exit_code == 0
    assert "active" in versions.output and "retired" in versions.output
    shown = runner.invoke(main, ["models", "show", *config, "2"])
    assert shown.exit_code == 0 and '"parent": "1"' in shown.output

    held = [label.id for label in agent.store.list_labels(status="held")]
    assert held
    released = runner.invoke(main, ["labels", "release", *config, "--actor", "lead",
                                    str(held[0])])
    assert released.exit_code == 0 and "released by lead" in released.output
    assert runner.invoke(main, ["labels", "release", *config, str(held[0])]).exit_code == 1

    back = runner.invoke(main, ["models", "rollback", *config])
    assert back.exit_code == 0 and "version 1 is active" in back.output
    assert runner.invoke(main, ["models", "activate", *config, "2"]).exit_code == 0
    missing = runner.invoke(main, ["models", "activate", *config, "42"])
    assert missing.exit_code == 1 and "error:" in missing.output
    shown = runner.invoke(main, ["incidents", "show", *config, str(incident)])
    assert shown.exit_code == 0 and '"examples"' in shown.output and '"labels"' in shown.output
