"""Time windows through the agent: reports per 10 minutes of record time, named by their
records, the same whether or not the agent restarted mid-window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from click.testing import CliRunner

from agent.cli import main
from agent.config import load_config
from storage import Store

START = 1_700_000_400  # a multiple of 600 s: windows begin on the hour's tens of minutes


def _write(path: Path, times: np.ndarray, load: np.ndarray, *, append: bool = False) -> None:
    with path.open("a" if append else "w") as handle:
        if not append:
            handle.write("ts,load\n")
        handle.writelines(f"{t},{v:.5f}\n" for t, v in zip(times, load, strict=True))


def _setup(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    _write(folder / "reference.csv", START - 86_400 + np.arange(4000) * 20,
           rng.normal(0, 1, 4000))
    data = {
        "version": 1,
        "schema": {"timestamp": "ts", "features": [{"name": "load", "type": "numeric"}]},
        "reference": {"path": str(folder / "reference.csv")},
        "sources": [{"name": "s", "type": "csv_file", "path": str(folder / "stream.csv"),
                     "mode": "replay"}],
        "detectors": [{"type": "feature_drift", "name": "drift", "window": "10m",
                       "min_window": 20}],
        "storage": {"url": f"sqlite:///{folder / 'metasentry.db'}"},
        "metrics": {"enabled": False}, "api": {"enabled": False}, "model": {"enabled": False},
    }
    path = folder / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _replay(config: Path, stream: Path) -> dict[str, object]:
    result = CliRunner().invoke(main, ["replay", "--config", str(config), "--json",
                                       "--source-name", "s", str(stream)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_time_windows_report_by_record_time_across_restarts(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    times = START + np.arange(600) * 6  # one record every 6 s: 100 per 10 minutes
    load = np.where(times >= START + 2400, rng.normal(2, 1, 600), rng.normal(0, 1, 600))
    outcomes = []
    for run, cuts in (("whole", [600]), ("restarted", [250, 430, 600])):
        folder = tmp_path / run
        folder.mkdir()
        config = _setup(folder)
        done = 0
        for cut in cuts:
            _write(folder / "stream.csv", times[done:cut], load[done:cut], append=done > 0)
            done = cut
            _replay(config, folder / "stream.csv")
        store = Store(load_config(config, need_token=False).storage_url())
        reports = [(r.window_end_key.rsplit(":", 1)[-1], r.n_window, r.rejected,
                    r.window_span["first_time"], r.window_span["last_time"])
                   for r in store.list_drift_reports(limit=100)[::-1]]
        outcomes.append(reports)
    whole, restarted = outcomes
    full = [r for r in whole if r[1] == 100]
    assert len(full) == 5  # windows closed by a later record; the last one by the replay's end
    assert [r[2] for r in full] == [False, False, False, False, True]
    assert all(int(float(r[3])) % 600 == 0 and int(float(r[4])) % 600 == 594 for r in full)
    assert [r for r in restarted if r[1] == 100] == full
