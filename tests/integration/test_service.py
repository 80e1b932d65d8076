"""`metasentry run` as a real process: readiness, API auth, metrics under promtool, SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from agent.config import load_config
from agent.metrics import CATALOGUE
from storage import Store

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-5d1f0c"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _promtool() -> str | None:
    """promtool from $PROMTOOL, PATH, the repo's cache, or installed by the project's script."""
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if found:
        return found
    script = subprocess.run(["bash", str(REPO / "scripts" / "ensure-promtool.sh")],
                            capture_output=True, text=True, timeout=300)
    return script.stdout.strip() or None if script.returncode == 0 else None


def _wait_http(url: str, timeout_s: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 within {timeout_s}s ({last})")


@pytest.fixture
def running_agent(write_config: Callable[..., Path], tmp_path: Path
                  ) -> Iterator[tuple[subprocess.Popen[bytes], str, str, Path]]:
    metrics_port, api_port = _free_port(), _free_port()
    config_path = write_config(live_model=True, **{
        "metrics.enabled": True, "metrics.listen": f"127.0.0.1:{metrics_port}",
        "api.enabled": True, "api.listen": f"127.0.0.1:{api_port}",
        "scheduler.drift_test_interval_s": 1, "logging.json": True,
    })
    env = os.environ | {"METASENTRY_API_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config",
                                 str(config_path)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{metrics_port}", config_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        print(log.read_text()[-3000:])


def test_service_end_to_end(running_agent: tuple[subprocess.Popen[bytes], str, str, Path]
                            ) -> None:
    proc, api, metrics_url, config_path = running_agent
    assert _wait_http(f"{api}/healthz").json()["status"] == "ok"
    ready = _wait_http(f"{api}/readyz").json()
    assert ready == {"ready": True, "checks": {"reference_fitted": True,
                                               "database_reachable": True,
                                               "migrations_at_head": True}}

    # The bundled replay source runs to its end while the service stays up.
    deadline = time.monotonic() + 120
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(f"{metrics_url}/metrics", timeout=5).text
        if 'metasentry_source_exhausted{source="nsl-kdd-sample"} 1.0' in text:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the sample was not replayed within 120 s")
    for name in CATALOGUE:
        assert name in text, f"{name} is in the catalogue but not exported"
    # Idle after the replay: nothing in flight, and the last commit is recent.
    assert "metasentry_batch_in_flight_age_seconds 0.0" in text
    last_commit = float(text.split("\nmetasentry_last_commit_timestamp_seconds ")[1].split()[0])
    assert time.time() - last_commit < 300

    attacks = httpx.get(f"{api}/v1/incidents", params={"kind": "attack"}).json()["incidents"]
    assert attacks and attacks[0]["predicted_class"] and attacks[0]["model_version"] == "1"
    assert httpx.get(f"{api}/v1/models").json()["serving"] == "1"
    assert 'metasentry_model_info{algorithm="memory"' in text
    incidents = httpx.get(f"{api}/v1/incidents", params={"kind": "drift"}).json()["incidents"]
    assert incidents and incidents[0]["kind"] == "drift"
    one = incidents[0]["id"]
    assert httpx.get(f"{api}/v1/incidents/{one}").json()["id"] == one
    assert httpx.get(f"{api}/v1/incidents/999999").status_code == 404

    # Writes need the token.
    body = {"label": "benign-shift", "actor": "tester"}
    assert httpx.post(f"{api}/v1/incidents/{one}/label", json=body).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.post(f"{api}/v1/incidents/{one}/label", json=body,
                      headers=wrong).status_code == 401
    good = {"Authorization": f"Bearer {TOKEN}"}
    labelled = httpx.post(f"{api}/v1/incidents/{one}/label", json=body, headers=good)
    assert labelled.status_code == 200 and labelled.json()["analyst_label"] == "benign-shift"

    promtool = _promtool()
    if promtool is None:
        pytest.skip("promtool not found (run scripts/ensure-promtool.sh or set PROMTOOL)")
    check = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=60)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    log_lines = (config_path.parent / "agent.log").read_text().splitlines()
    assert log_lines, "the agent logged nothing"
    records = [json.loads(line) for line in log_lines]  # `logging.json: true`: one object a line
    assert any(r["msg"].startswith("agent running") for r in records)
    assert all(TOKEN not in line for line in log_lines), "the API token leaked into the logs"


def test_sigterm_exits_zero_and_leaves_database_consistent(
        running_agent: tuple[subprocess.Popen[bytes], str, str, Path]) -> None:
    proc, api, metrics_url, config_path = running_agent
    _wait_http(f"{api}/readyz")
    time.sleep(1.0)  # let it commit some batches, likely mid-stream
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0

    config = load_config(config_path, need_token=False)
    db = Path(config.storage_url().removeprefix("sqlite:///"))
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = Store(config.storage_url())
    assert store.at_head()
    position = store.load_position("nsl-kdd-sample")
    assert position is not None
    assert position["processed"] + position["rejected"] > 0
    assert sum(store.count_quarantine().values()) == position["rejected"]


def test_a_busy_port_is_one_clear_error(write_config: Callable[..., Path]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config_path = write_config(**{"api.enabled": True, "api.listen": f"127.0.0.1:{port}"})
        env = os.environ | {"METASENTRY_API_TOKEN": TOKEN}
        result = subprocess.run([sys.executable, "-m", "agent", "run", "--config",
                                 str(config_path)], env=env, capture_output=True, text=True,
                                timeout=120)
    assert result.returncode == 2
    assert f"api.listen: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
