"""Replay of the bundled sample: drift is found, and summary, database and metrics agree."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from agent.cli import main
from agent.config import load_config
from agent.datafile import open_file_source
from agent.metrics import Metrics
from agent.service import Agent
from storage import Store

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nsl-kdd"
STREAM_RECORDS = 10_000


def _sample_value(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_cli_replay_summary_matches_database(write_config: Callable[..., Path]) -> None:
    config_path = write_config()
    result = CliRunner().invoke(main, ["replay", "--config", str(config_path), "--json",
                                       str(SAMPLE / "stream.csv.gz")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["records"] == STREAM_RECORDS
    assert summary["processed"] + sum(summary["rejected"].values()) == STREAM_RECORDS
    # KDDTest+ differs from the training traffic: every full window should reject.
    assert summary["incidents"].get("drift", 0) >= 8
    assert summary["records_per_s"] > 0

    config = load_config(config_path, need_token=False)
    store = Store(config.storage_url())
    assert store.count_incidents().get("drift", 0) == summary["incidents"]["drift"]
    reports = store.list_drift_reports(limit=1000)
    assert len(reports) == summary["windows_tested"]
    assert sum(store.count_quarantine().values()) == sum(summary["rejected"].values())
    incident = store.list_incidents(kind="drift", limit=1)[0]
    assert incident.explanation["top_features"], "a drift incident names the features that moved"
    assert incident.p_value is not None and incident.p_value <= 0.01

    # A second replay of the same file resumes at its end: nothing new, nothing doubled.
    again = CliRunner().invoke(main, ["replay", "--config", str(config_path), "--json",
                                      str(SAMPLE / "stream.csv.gz")])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["records"] == 0
    assert store.count_incidents() == {"drift": summary["incidents"]["drift"]}


def test_metrics_agree_with_store(write_config: Callable[..., Path]) -> None:
    config = load_config(write_config(), need_token=False)
    metrics = Metrics()
    agent = Agent(config, metrics=metrics)
    agent.prepare()
    agent.attach(open_file_source("sample", SAMPLE / "stream.csv.gz",
                                  columns=config.schema.columns, header=False))
    totals = agent.run_sources(stop_when_exhausted=True)
    agent.close()
    reg = metrics.registry
    assert _sample_value(reg, "metasentry_records_received_total", {"source": "sample"}) == (
        STREAM_RECORDS)
    assert _sample_value(reg, "metasentry_records_processed_total", {"source": "sample"}) == (
        totals.processed)
    drift_created = sum(
        _sample_value(reg, "metasentry_incidents_created_total", {"kind": "drift", "severity": s})
        for s in ("medium", "high"))
    store = Store(config.storage_url())
    assert drift_created == store.count_incidents()["drift"] == totals.incidents["drift"]
    assert _sample_value(reg, "metasentry_drift_windows_total", {"detector": "feature_drift"}) == (
        totals.windows_tested)
    assert _sample_value(reg, "metasentry_source_exhausted", {"source": "sample"}) == 1


@pytest.mark.parametrize("window", [1000])
def test_reference_like_stream_raises_no_drift(write_config: Callable[..., Path],
                                               tmp_path: Path, window: int) -> None:
    """The reference file replayed against itself: windows are reference-like, alarms rare."""
    config_path = write_config(**{"detectors.feature_drift.window": window,
                                  "detectors.feature_drift.step": window})
    result = CliRunner().invoke(main, ["replay", "--config", str(config_path), "--json",
                                       str(SAMPLE / "reference.csv.gz")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["windows_tested"] >= 8
    # The reference file is ordered as drawn from the training file, so windows are close to
    # exchangeable with it; at alpha = 0.01 per window, more than one alarm would be suspicious.
    assert summary["incidents"].get("drift", 0) <= 1


def test_dead_database_at_start_is_one_line(write_config: Callable[..., Path]) -> None:
    config_path = write_config(**{"storage.url": "postgresql+psycopg://postgres@127.0.0.1:1/x"})
    result = CliRunner().invoke(main, ["replay", "--config", str(config_path),
                                       str(SAMPLE / "stream.csv.gz")])
    assert result.exit_code == 1
    assert "is unavailable" in result.output and "Traceback" not in result.output


def test_drift_incident_names_its_window_by_id_and_time(tmp_path: Path) -> None:
    """With `id:` and `timestamp:` in the schema, an incident says which records it covers."""
    import numpy as np
    import orjson
    import yaml

    rng = np.random.default_rng(3)

    def rows(start: int, n: int, shift: float) -> list[bytes]:
        return [orjson.dumps({"rid": f"r{start + i}", "ts": f"t{start + i:05d}",
                              "x": float(rng.normal(shift)), "label": "a"})
                for i in range(n)]

    (tmp_path / "ref.jsonl").write_bytes(b"\n".join(rows(0, 2000, 0.0)) + b"\n")
    (tmp_path / "stream.jsonl").write_bytes(b"\n".join(rows(0, 400, 0.0) + rows(400, 400, 3.0))
                                            + b"\n")
    config = {
        "schema": {"id": "rid", "timestamp": "ts", "label": "label",
                   "features": [{"name": "x", "type": "numeric"}]},
        "reference": {"path": str(tmp_path / "ref.jsonl")},
        "sources": [{"type": "stdin"}],
        "storage": {"url": f"sqlite:///{tmp_path / 'w.db'}"},
        "detectors": {"feature_drift": {"window": 200, "step": 200, "min_window": 50}},
        "pipeline": {"batch_size": 150},
        "metrics": {"enabled": False}, "api": {"enabled": False},
    }
    config_path = tmp_path / "w.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["replay", "--config", str(config_path), "--json",
                                       str(tmp_path / "stream.jsonl")])
    assert result.exit_code == 0, result.output
    store = Store(load_config(config_path, need_token=False).storage_url())
    windows = sorted(i.explanation["window"]["last_id"] for i in store.list_incidents())
    assert windows == ["r599", "r799"]  # the two windows entirely after the shift
    first = next(i for i in store.list_incidents()
                 if i.explanation["window"]["last_id"] == "r599").explanation["window"]
    assert first["first_id"] == "r400" and first["first_time"] == "t00400"
    assert first["last_time"] == "t00599"


def test_the_tail_of_a_replay_is_tested_once_and_a_rerun_adds_nothing(
        write_config: Callable[..., Path], tmp_path: Path) -> None:
    import gzip

    with gzip.open(SAMPLE / "stream.csv.gz", "rt") as handle:
        lines = [next(handle) for _ in range(2500)]
    stream = tmp_path / "tail.csv"
    stream.write_text("".join(lines))
    config_path = write_config()

    def replay() -> dict[str, object]:
        result = CliRunner().invoke(main, ["replay", "--config", str(config_path), "--json",
                                           str(stream)])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    first = replay()
    assert first["windows_tested"] == 3  # two full windows of 1,000 and the last 500 records
    again = replay()
    assert again["records"] == 0 and again["windows_tested"] == 0
    store = Store(load_config(config_path, need_token=False).storage_url())
    assert len(store.list_drift_reports(limit=100)) == 3


def test_drift_reports_name_the_records_of_their_window(write_config: Callable[..., Path]
                                                        ) -> None:
    config_path = write_config()
    result = CliRunner().invoke(main, ["replay", "--config", str(config_path), "--limit",
                                       "2000", str(SAMPLE / "stream.csv.gz")])
    assert result.exit_code == 0, result.output
    store = Store(load_config(config_path, need_token=False).storage_url())
    reports = sorted(store.list_drift_reports(limit=10), key=lambda r: r.id)
    assert reports and all(r.window_span for r in reports)
    first, second = reports[0].window_span, reports[1].window_span
    assert first is not None and second is not None
    assert first["last_offset"] == reports[0].window_end_key
    assert second["last_offset"] == reports[1].window_end_key
    assert first["first_offset"] != second["first_offset"]
