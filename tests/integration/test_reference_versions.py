"""Reference versions end to end: approval of benign drift, rolling under its caps, rollback,
restarts (through the real CLI, store and pipeline, on SQLite)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from agent.cli import main
from agent.config import load_config
from storage import Store

WINDOW = 200


def _write_csv(path: Path, rows: np.ndarray, protocols: np.ndarray, *, append: bool = False
               ) -> None:
    lines = [f"{a:.6f},{b:.6f},{p}" for (a, b), p in zip(rows, protocols, strict=True)]
    with path.open("a" if append else "w") as handle:
        if not append:
            handle.write("load,latency,proto\n")
        handle.write("\n".join(lines) + "\n")


def _records(rng: np.random.Generator, n: int, *, load_mean: float = 0.0
             ) -> tuple[np.ndarray, np.ndarray]:
    rows = np.column_stack([rng.normal(load_mean, 1.0, n), rng.normal(5.0, 1.0, n)])
    return rows, rng.choice(["tcp", "udp"], size=n, p=[0.8, 0.2])


def _config(tmp_path: Path, mode: str, n_reference: int = 2000, **reference: Any) -> Path:
    rng = np.random.default_rng(0)
    _write_csv(tmp_path / "reference.csv", *_records(rng, n_reference))
    data = {
        "version": 1,
        "schema": {"features": [{"name": "load", "type": "numeric"},
                                {"name": "latency", "type": "numeric"},
                                {"name": "proto", "type": "categorical"}]},
        "reference": {"path": str(tmp_path / "reference.csv"), "mode": mode, **reference},
        "sources": [{"name": "s", "type": "csv_file", "path": str(tmp_path / "stream.csv"),
                     "mode": "replay"}],
        "detectors": [{"type": "feature_drift", "name": "drift", "window": WINDOW,
                       "min_window": 50}],
        "storage": {"url": f"sqlite:///{tmp_path / 'metasentry.db'}"},
        "metrics": {"enabled": False},
        "api": {"enabled": False},
        "model": {"enabled": False},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _replay(config: Path, stream: Path) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["replay", "--config", str(config), "--json",
                                       "--source-name", "s", str(stream)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _store(config: Path) -> Store:
    return Store(load_config(config, need_token=False).storage_url())


def test_approved_benign_drift_moves_the_reference_and_survives_a_restart(
        tmp_path: Path) -> None:
    config = _config(tmp_path, "approved")
    stream = tmp_path / "stream.csv"
    rng = np.random.default_rng(1)
    _write_csv(stream, *_records(rng, 4 * WINDOW, load_mean=1.5))  # the new normal
    first = _replay(config, stream)
    assert first["incidents"].get("drift", 0) >= 3
    store = _store(config)
    [initial] = store.list_references(source="s", detector="drift")
    assert (initial.version, initial.origin, initial.status) == (1, "initial", "active")
    candidates = store.list_references(source="s", candidates=True)
    assert len(candidates) == first["incidents"]["drift"]
    assert all(c.origin == "window" and c.n_records == WINDOW for c in candidates)

    incident = store.list_incidents(kind="drift", limit=1)[0]
    labelled = CliRunner().invoke(main, ["label", "--config", str(config), "--actor", "ana",
                                         str(incident.id), "benign_drift"])
    assert labelled.exit_code == 0, labelled.output
    assert "joins the reference" in labelled.output
    assert [c.status for c in store.list_references(source="s", candidates=True)
            if c.incident_key == incident.offset_key] == ["approved"]

    # More of the new normal: applied at the next batch, tested against version 2.
    _write_csv(stream, *_records(rng, 4 * WINDOW, load_mean=1.5), append=True)
    second = _replay(config, stream)
    assert second["windows_tested"] == 4
    assert second["incidents"].get("drift", 0) <= 1
    versions = store.list_references(source="s", detector="drift")
    assert [(v.version, v.origin, v.status) for v in versions] == [
        (2, "approved", "active"), (1, "initial", "superseded")]
    assert versions[0].actor == "ana" and versions[0].parent == 1
    assert versions[0].summary["numeric"]["load"]["mean"] == pytest.approx(1.5, abs=0.2)

    # A restart reads version 2 back: the new normal stays normal, the old one is drift now.
    _write_csv(stream, *_records(rng, 2 * WINDOW, load_mean=1.5), append=True)
    _write_csv(stream, *_records(rng, 2 * WINDOW, load_mean=0.0), append=True)
    third = _replay(config, stream)
    reports = store.list_drift_reports(limit=4)  # newest first
    assert [r.rejected for r in reports] == [True, True, False, False]
    assert third["incidents"].get("drift", 0) == 2


def _ramp(tmp_path: Path, config: Path, per_window: float, windows: int, seed: int
          ) -> dict[str, Any]:
    stream = tmp_path / "stream.csv"
    rng = np.random.default_rng(seed)
    for step in range(windows):
        _write_csv(stream, *_records(rng, WINDOW, load_mean=per_window * step),
                   append=step > 0)
    return _replay(config, stream)


def test_rolling_reference_refuses_to_follow_faster_than_its_cap(tmp_path: Path) -> None:
    config = _config(tmp_path, "rolling", rolling={"follow_rate": 0.05})
    # `load` climbs 0.1 standard deviations per window: 3 in the end.
    summary = _ramp(tmp_path, config, 0.1, 30, seed=2)
    store = _store(config)
    versions = store.list_references(source="s", detector="drift", limit=1000)
    means = {v.version: v.summary["numeric"]["load"]["mean"] for v in versions}
    rolling = [v for v in versions if v.origin == "rolling"]
    assert rolling, "the reference never followed"
    for version in rolling:  # one accepted window replaces at most 5 % of the records
        assert abs(means[version.version] - means[version.parent]) <= 0.05 * 4.0
    # The stream outran the cap: its windows were tested against a reference left behind.
    assert summary["incidents"].get("drift", 0) >= 10
    assert max(means.values()) < 1.5


def test_rolling_reference_stops_at_its_anchor_limit_until_approved(tmp_path: Path) -> None:
    # A small reference replaced quickly: it keeps up with 0.03 standard deviations per window.
    config = _config(tmp_path, "rolling", n_reference=400,
                     rolling={"follow_rate": 0.5, "anchor_limit": 0.2})
    _ramp(tmp_path, config, 0.03, 40, seed=5)
    store = _store(config)
    [held] = store.list_incidents(kind="reference_drift", limit=10)
    assert held.explanation["feature"] == "load" and held.explanation["distance"] > 0.2
    versions = store.list_references(source="s", detector="drift", limit=1000)
    last_rolling = max(v.version for v in versions)
    [candidate] = [c for c in store.list_references(source="s", candidates=True)
                   if c.origin == "rolling"]
    assert candidate.incident_key == held.offset_key

    # Held: more of the stream moves nothing until a person answers.
    stream = tmp_path / "stream.csv"
    rng = np.random.default_rng(6)
    _write_csv(stream, *_records(rng, 2 * WINDOW, load_mean=1.2), append=True)
    _replay(config, stream)
    assert max(v.version for v in store.list_references(source="s", limit=1000)) == (
        last_rolling)
    store.apply_label(held.id, "benign_drift", actor="ana")
    _write_csv(stream, *_records(rng, 2 * WINDOW, load_mean=1.2), append=True)
    _replay(config, stream)
    active = store.active_reference("s", "drift")
    assert active is not None and active.origin in ("approved", "rolling")
    approved = [v for v in store.list_references(source="s", limit=1000)
                if v.origin == "approved"]
    assert len(approved) == 1 and approved[0].summary["applied_candidates"] == [candidate.id]


def test_rollback_is_a_new_version_that_a_running_agent_picks_up(tmp_path: Path) -> None:
    config = _config(tmp_path, "approved")
    stream = tmp_path / "stream.csv"
    rng = np.random.default_rng(3)
    _write_csv(stream, *_records(rng, 2 * WINDOW, load_mean=2.0))
    _replay(config, stream)
    store = _store(config)
    incident = store.list_incidents(kind="drift", limit=1)[0]
    store.apply_label(incident.id, "benign_drift", actor="ana")
    _write_csv(stream, *_records(rng, WINDOW, load_mean=2.0), append=True)
    _replay(config, stream)
    assert store.active_reference("s", "drift").version == 2  # type: ignore[union-attr]

    rolled = CliRunner().invoke(main, ["reference", "rollback", "--config", str(config),
                                       "--source", "s", "--detector", "drift", "--to", "1"])
    assert rolled.exit_code == 0, rolled.output
    active = store.active_reference("s", "drift")
    assert active is not None and (active.version, active.origin, active.parent) == (
        3, "rollback", 1)
    _write_csv(stream, *_records(rng, WINDOW, load_mean=2.0), append=True)
    after = _replay(config, stream)
    assert after["incidents"].get("drift", 0) == 1  # tested against version 1's normal again

    listed = CliRunner().invoke(main, ["reference", "list", "--config", str(config)])
    assert listed.exit_code == 0 and "rollback" in listed.output
    shown = CliRunner().invoke(main, ["reference", "show", "--config", str(config),
                                      str(active.id)])
    assert json.loads(shown.stdout)["origin"] == "rollback"
    missing = CliRunner().invoke(main, ["reference", "rollback", "--config", str(config),
                                        "--source", "s", "--detector", "drift", "--to", "9"])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_rolling_versions_are_the_same_whether_or_not_the_agent_restarted(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    parts = [_records(rng, 3 * WINDOW + 37, load_mean=0.05 * k) for k in range(4)]
    histories = []
    for run, cuts in (("whole", [4]), ("restarted", [1, 2, 3, 4])):
        folder = tmp_path / run
        folder.mkdir()
        config = _config(folder, "rolling", rolling={"follow_rate": 0.1})
        stream = folder / "stream.csv"
        written = 0
        for cut in cuts:
            for k in range(written, cut):
                _write_csv(stream, *parts[k], append=k > 0)
            written = cut
            _replay(config, stream)
        histories.append([(v.version, v.origin, v.summary["numeric"]["load"]["mean"])
                          for v in _store(config).list_references(limit=1000)])
    assert histories[0] == histories[1]
    assert len(histories[0]) > 3
