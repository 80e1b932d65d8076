"""The registry under faults: kill -9 mid-activation, and two agents on one PostgreSQL.

A crash during adaptation must leave the previous version serving, the labels pending and no
half-written version; the next run adapts exactly once. Two agent processes sharing one
PostgreSQL both serve a version activated from outside within ``model.poll_interval_s``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from agent.config import load_config
from agent.service import Agent
from tests.conftest import PG_URL, REPO
from tests.integration.live_stream import incident_with_examples, of_class, sample_lines

_CRASHING_ADAPTATION = """
import sys, time
import storage.registry as registry
from agent.config import load_config
from agent.service import Agent

def hang_inside_the_transaction(connection, version):
    print("ACTIVATING", flush=True)
    time.sleep(120)

registry.RegistryStore._activate = staticmethod(hang_inside_the_transaction)
agent = Agent(load_config(sys.argv[1], need_token=False))
agent.prepare()
agent.adapter.run("crash test")
"""


def _labelled_pool(agent: Agent, label: str, count: int = 5) -> int:
    incident = incident_with_examples(agent, of_class(sample_lines(), label)[:count], "pool")
    agent.store.apply_label(incident, label, actor="ana")
    return incident


def test_kill_9_during_activation_leaves_the_previous_version_serving(
        write_config: Callable[..., Path], tmp_path: Path) -> None:
    config_path = write_config(live_model=True)
    config = load_config(config_path, need_token=False)
    agent = Agent(config)
    try:
        agent.prepare()
        first = agent.store.active_model_version()
        _labelled_pool(agent, "apache2")
        incidents_before = agent.store.count_incidents()
    finally:
        agent.close()
    assert first is not None

    script = tmp_path / "crash.py"
    script.write_text(_CRASHING_ADAPTATION)
    process = subprocess.Popen([sys.executable, str(script), str(config_path)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if "ACTIVATING" in line:
                break
        else:
            pytest.fail("the adaptation never reached activation")
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)

    agent = Agent(config)
    try:
        agent.prepare()
        assert agent.store.active_model_version() == first
        assert [v.version for v in agent.store.list_model_versions()] == [first.version]
        assert {label.status for label in agent.store.list_labels()} == {"pending"}
        outcome = agent.adapter.run("after the crash")  # type: ignore[union-attr]
        assert outcome.status == "activated"
        versions = agent.store.list_model_versions()
        assert len(versions) == 2 and versions[0].parent == first.version
        assert agent.store.count_incidents() == incidents_before
    finally:
        agent.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serving(port: int, token: str) -> str | None:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2.0,
                           headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError:
        return None
    return answer.json().get("serving") if answer.status_code == 200 else None


@pytest.mark.postgres
@pytest.mark.slow
def test_two_agents_on_one_postgres_both_serve_a_newly_activated_version(
        write_config: Callable[..., Path], fresh_database: Callable[..., str],
        tmp_path: Path) -> None:
    url = PG_URL.rsplit("/", 1)[0] + "/" + fresh_database("metasentry_two_agents")
    token = "two-agents-token"
    ports = [_free_port(), _free_port()]
    configs = [write_config(f"agent{i}.yaml", live_model=True, **{
        "storage.url": url, "api.enabled": True, "api.listen": f"127.0.0.1:{port}",
        "model.poll_interval_s": 0.5, "adaptation.check_interval_s": 0.5,
        "sources.0.mode": "follow", "sources.0.path": str(tmp_path / f"idle{i}.csv"),
        "sources.0.name": f"idle{i}"}) for i, port in enumerate(ports)]
    env = {**os.environ, "METASENTRY_API_TOKEN": token, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config",
                              str(configs[0])], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = None
    try:
        deadline = time.monotonic() + 180
        while _serving(ports[0], token) is None and time.monotonic() < deadline:
            time.sleep(0.5)  # the first agent creates version 1; the second then loads it
        second = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config",
                                   str(configs[1])], cwd=REPO, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while _serving(ports[1], token) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _serving(ports[0], token) == _serving(ports[1], token) == "1"

        config = load_config(configs[0], need_token=False)
        labeller = Agent(config)  # a third process's view: label on the shared database
        try:
            labeller.prepare()
            _labelled_pool(labeller, "apache2")
        finally:
            labeller.close()
        while time.monotonic() < deadline and not (
                _serving(ports[0], token) == _serving(ports[1], token) == "2"):
            time.sleep(0.5)
        assert _serving(ports[0], token) == "2" and _serving(ports[1], token) == "2"
    finally:
        for process in (first, second):
            if process is not None:
                process.send_signal(signal.SIGTERM)
        for process in (first, second):
            if process is not None:
                process.wait(60)
