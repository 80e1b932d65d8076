"""Every window detector type through the agent: drift found on the bundled sample, and the
same reports whether or not the agent restarted mid-stream (nothing lost, nothing doubled)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.config import load_config
from detectors import DETECTOR_TYPES
from storage import Store
from tests.conftest import SAMPLE

ENTRIES: dict[str, dict[str, Any]] = {
    "feature_drift": {"window": 300, "min_window": 50},
    "online_drift": {"window": 20, "ert": 300.0, "report_every": 100, "calibration_streams": 200},
    "mmd_drift": {"window": 300, "min_window": 50},
    "classifier_drift": {"window": 300, "min_window": 50},
}
WINDOW_TYPES = [t for t in ENTRIES if t in DETECTOR_TYPES]


def _replay(config: Path, limit: int | None = None) -> dict[str, Any]:
    args = ["replay", "--config", str(config), "--json", "--source-name", "sample"]
    if limit is not None:
        args += ["--limit", str(limit)]
    result = CliRunner().invoke(main, [*args, str(SAMPLE / "stream.csv.gz")])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("detector_type", WINDOW_TYPES)
def test_window_detector_in_the_agent_survives_a_restart(
        detector_type: str, write_config: Callable[..., Path], tmp_path: Path) -> None:
    entry = {"type": detector_type, "name": detector_type, **ENTRIES[detector_type]}
    runs = []
    for name, limits in (("whole", [1500]), ("restarted", [700, 800])):
        config = write_config(f"{name}.yaml", detectors=[entry],
                              **{"storage.url": f"sqlite:///{tmp_path / name}.db"})
        for limit in limits:
            _replay(config, limit=limit)
        store = Store(load_config(config, need_token=False).storage_url())
        runs.append(({(r.window_end_key, r.rejected, round(r.p_value, 9))
                      for r in store.list_drift_reports(limit=10_000)},
                     store.count_incidents().get("drift", 0)))
    (whole_reports, whole_incidents), (restarted_reports, restarted_incidents) = runs
    assert whole_incidents >= 1, f"{detector_type} found no drift"
    # The same windows, and one more: the end of the first replay tests its partial window.
    assert whole_reports <= restarted_reports
    assert len(restarted_reports - whole_reports) <= 1
    assert whole_incidents <= restarted_incidents <= whole_incidents + 1
