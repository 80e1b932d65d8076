"""A real Prometheus (Debian's package, run from the binary, never as a service) scrapes a real
`metasentry run` through the shipped scrape config and evaluates the shipped alert rules: the
target is up, and MetaSentryDriftDetected is seen firing once the agent rejects windows of a
drifting stream. promtool's rule unit tests check the rules' logic on synthetic series; this
checks them against the series the agent really exports."""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agent.service import wait_for

REPO = Path(__file__).resolve().parents[2]
ENSURE = REPO / "scripts" / "ensure-promtool.sh"
SCRAPE_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
RULES = REPO / "deploy" / "prometheus" / "rules" / "metasentry.rules.yml"
STREAM = REPO / "examples" / "nsl-kdd" / "stream.csv.gz"


@pytest.fixture(scope="module")
def prometheus() -> Path:
    try:
        found = subprocess.run(["bash", str(ENSURE), "prometheus"], capture_output=True,
                               text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"the prometheus binary cannot be obtained: {exc}")
    if found.returncode != 0:
        reason = (found.stderr.strip().splitlines() or ["no reason given"])[-1]
        pytest.skip(f"the prometheus binary cannot be obtained: {reason}")
    return Path(found.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, **params: str) -> Any:
    response = httpx.get(f"http://127.0.0.1:{port}{path}", params=params, timeout=5)
    response.raise_for_status()
    return response.json()["data"]


def _firing(port: int, name: str) -> list[dict[str, Any]]:
    try:
        alerts = _get(port, "/api/v1/alerts")["alerts"]
    except httpx.HTTPError:
        return []
    return [a for a in alerts if a["labels"].get("alertname") == name and a["state"] == "firing"]


def test_prometheus_scrapes_the_agent_and_a_shipped_alert_fires(
        prometheus: Path, write_config: Callable[..., Path], tmp_path: Path) -> None:
    lines = gzip.decompress(STREAM.read_bytes()).splitlines(keepends=True)
    stream = tmp_path / "stream.csv"
    stream.write_bytes(b"")
    metrics_port, prometheus_port = _free_port(), _free_port()
    config_path = write_config(**{
        "sources": [{"name": "followed", "type": "csv_file", "path": str(stream),
                     "mode": "follow", "header": False}],
        "metrics.enabled": True, "metrics.listen": f"127.0.0.1:{metrics_port}"})
    scrape = yaml.safe_load(SCRAPE_CONFIG.read_text())
    scrape["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    scrape["rule_files"] = [str(RULES)]
    (job,) = scrape["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(scrape))

    agent_log, prometheus_log = tmp_path / "agent.log", tmp_path / "prometheus.log"
    with open(agent_log, "wb") as out:
        agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config",
                                  str(config_path)], env=os.environ | {"PYTHONUNBUFFERED": "1"},
                                 stdout=out, stderr=subprocess.STDOUT)
    with open(prometheus_log, "wb") as out:
        server = subprocess.Popen([str(prometheus),
                                   f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            try:
                result = _get(prometheus_port, "/api/v1/query", query='up{job="metasentry"}')
            except httpx.HTTPError:
                return False
            return any(r["value"][1] == "1" for r in result["result"])

        assert wait_for(up, 120), (agent_log.read_text()[-2000:]
                                   + prometheus_log.read_text()[-2000:])
        # The stream arrives in chunks, so the rejected-window counter rises between scrapes
        # and increase() over the rule's window sees it.
        for start in range(0, 6000, 1000):
            with stream.open("ab") as more:
                more.write(b"".join(lines[start:start + 1000]))
            time.sleep(2)
            if _firing(prometheus_port, "MetaSentryDriftDetected"):
                break
        assert wait_for(lambda: bool(_firing(prometheus_port, "MetaSentryDriftDetected")), 60), (
            agent_log.read_text()[-2000:])
        (alert,) = _firing(prometheus_port, "MetaSentryDriftDetected")[:1]
        assert alert["labels"]["job"] == "metasentry" and alert["labels"]["detector"]
        rules = _get(prometheus_port, "/api/v1/rules")["groups"]
        assert all(rule["health"] == "ok" for group in rules for rule in group["rules"]), rules
    finally:
        for proc in (server, agent):
            proc.terminate()
        for proc in (server, agent):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
