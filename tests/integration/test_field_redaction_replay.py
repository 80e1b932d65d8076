"""``schema.redact`` end to end: a replayed stream's addresses and users never reach the
database's incidents, drift reports and quarantine, nor the alerts a JSONL sink writes."""

from __future__ import annotations

import csv
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml
from click.testing import CliRunner

from agent.cli import main
from agent.config import load_config
from agent.delivery import DeliveryWorker, build_sinks
from agent.metrics import Metrics
from storage import Store

KNOWN_IPS = [f"10.20.30.{i}" for i in range(1, 6)]
USERS = ["alice.jones", "bob.smith", "carol.white"]


def _write(path: Path, rows: list[list[object]]) -> None:
    with path.open("w", newline="") as out:
        csv.writer(out).writerows(rows)


def _data(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(7)
    reference = [[KNOWN_IPS[i % 5], USERS[i % 3], round(float(rng.normal(100, 10)), 2),
                  ["http", "ftp"][i % 2]] for i in range(800)]
    # The stream moves: one address takes most of the traffic, bytes grow; one bad line.
    stream: list[list[object]] = [[KNOWN_IPS[0] if i % 4 else KNOWN_IPS[i % 5], USERS[i % 3],
                                   round(float(rng.normal(160, 10)), 2), "http"]
                                  for i in range(1200)]
    stream[600] = [KNOWN_IPS[1], USERS[1], "not-a-number", "http"]
    _write(ref := tmp_path / "reference.csv", reference)
    _write(path := tmp_path / "stream.csv", stream)
    return ref, path


def _config(tmp_path: Path, reference: Path, alerts: Path) -> Path:
    config = {
        "schema": {
            "columns": ["src_ip", "user", "bytes", "service"],
            "features": [{"name": "src_ip", "type": "categorical"},
                         {"name": "bytes", "type": "numeric"},
                         {"name": "service", "type": "categorical"}],
            "redact": ["src_ip", {"field": "user", "mode": "hash"}],
        },
        "reference": {"path": str(reference), "header": False},
        "sources": [{"type": "csv_file", "name": "flows", "path": str(tmp_path / "x.csv"),
                     "header": False, "mode": "replay"}],
        "detectors": [{"type": "feature_drift", "name": "feature_drift", "window": 300,
                       "alpha": 0.01}],
        "storage": {"url": f"sqlite:///{tmp_path / 'metasentry.db'}"},
        "metrics": {"enabled": False},
        "api": {"enabled": False},
        "model": {"enabled": False},
        "sinks": [{"type": "jsonl", "name": "siem", "path": str(alerts)}],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_redacted_values_never_reach_the_database_or_a_sink(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METASENTRY_REDACT_KEY", "test-key")
    reference, stream = _data(tmp_path)
    alerts = tmp_path / "alerts.jsonl"
    config_path = _config(tmp_path, reference, alerts)
    (tmp_path / "x.csv").write_text("")

    run = CliRunner().invoke(main, ["replay", "--config", str(config_path), "--json",
                                    str(stream)])
    assert run.exit_code == 0, run.output
    summary = json.loads(run.stdout)
    assert summary["incidents"].get("drift", 0) >= 1 and sum(summary["rejected"].values()) == 1

    config = load_config(config_path, need_token=False)
    store = Store(config.storage_url())
    worker = DeliveryWorker(store, build_sinks(config), Metrics())
    while worker.run_pass("siem"):
        pass
    worker.stop()
    lines = alerts.read_bytes().splitlines()
    assert len(lines) == summary["incidents"]["drift"]
    shifted = [f for f in orjson.loads(lines[0])["incident"]["explanation"]["features"]
               if f["name"] == "src_ip"]
    assert all(s["category"] == "[redacted]" for f in shifted for s in f["category_shifts"])

    with closing(sqlite3.connect(tmp_path / "metasentry.db")) as db:
        tables = ["incidents", "incident_records", "drift_reports", "quarantine", "alert_outbox"]
        stored = {t: json.dumps(db.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
    assert "[redacted]" in stored["quarantine"], stored["quarantine"]
    for text in [*stored.values(), alerts.read_text()]:
        for secret in KNOWN_IPS + USERS:
            assert secret not in text
