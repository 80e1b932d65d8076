"""kill -9 mid-replay, restart: every record processed once, no incident lost or doubled."""

from __future__ import annotations

import gzip
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import orjson

from agent.config import load_config
from agent.replay import replay_file
from storage import Store

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nsl-kdd"
BAD_LINES = [
    "not,enough,columns",
    "0,tcp,http,SF,nan," + ",".join(["0"] * 36) + ",normal,21",
    "0,tcp,http,SF,abc," + ",".join(["0"] * 36) + ",normal,21",
]


def _stream_with_bad_lines(path: Path, copies: int = 2) -> int:
    lines = gzip.open(SAMPLE / "stream.csv.gz", "rt").read().splitlines()
    out: list[str] = []
    for c in range(copies):
        for i, line in enumerate(lines):
            out.append(line)
            if i % 2500 == 1000:
                out.append(BAD_LINES[(i // 2500 + c) % len(BAD_LINES)])
    path.write_text("\n".join(out) + "\n")
    return len(out)


def _committed(db: Path, source: str) -> tuple[int, int]:
    if not db.exists():
        return 0, 0
    try:
        with closing(sqlite3.connect(db, timeout=1)) as conn:
            row = conn.execute("SELECT position FROM source_offsets WHERE source = ?",
                               (source,)).fetchone()
    except sqlite3.OperationalError:  # tables not created yet
        return 0, 0
    if row is None:
        return 0, 0
    position = orjson.loads(row[0]) if isinstance(row[0], (str, bytes)) else row[0]
    return int(position["processed"]), int(position["rejected"])


def _incident_keys(store: Store) -> list[tuple[str, str, str]]:
    rows = store.list_incidents(limit=10_000)
    return sorted((r.kind, r.offset_key, r.detector) for r in rows)


def test_kill_minus_nine_then_restart_loses_and_doubles_nothing(
        write_config: Callable[..., Path], tmp_path: Path) -> None:
    data = tmp_path / "stream.csv"
    total = _stream_with_bad_lines(data)
    crash_cfg = write_config("crash.yaml", **{"pipeline.batch_size": 100,
                                              "detectors.feature_drift.window": 1000,
                                              "detectors.feature_drift.step": 500})
    db = tmp_path / "metasentry.db"
    cmd = [sys.executable, "-m", "agent", "replay", "--config", str(crash_cfg),
           "--source-name", "crashy", "--json", str(data)]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        done = sum(_committed(db, "crashy"))
        if 0.25 * total <= done:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the replay finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    before = sum(_committed(db, "crashy"))
    assert 0 < before < total, "killed mid-replay"

    restarted = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    assert restarted.returncode == 0, restarted.stderr.decode()[-2000:]
    second = orjson.loads(restarted.stdout)
    processed, rejected = _committed(db, "crashy")
    assert processed + rejected == total, "every record processed exactly once in total"
    assert second["records"] == total - before

    # The same file through an uninterrupted replay into a fresh database.
    clean_cfg = write_config("clean.yaml", **{
        "pipeline.batch_size": 100, "detectors.feature_drift.window": 1000,
        "detectors.feature_drift.step": 500,
        "storage.url": f"sqlite:///{tmp_path / 'clean.db'}"})
    clean = load_config(clean_cfg, need_token=False)
    replay_file(clean, data, source_name="crashy")

    crashed_store = Store(load_config(crash_cfg, need_token=False).storage_url())
    clean_store = Store(clean.storage_url())
    crashed_keys = _incident_keys(crashed_store)
    assert crashed_keys, "the shifted stream produced drift incidents"
    assert len(crashed_keys) == len(set(crashed_keys))
    assert crashed_keys == _incident_keys(clean_store), (
        "the rebuilt windows after the crash tested exactly the windows of an uninterrupted run")
    assert crashed_store.count_quarantine() == clean_store.count_quarantine()
    assert sum(crashed_store.count_quarantine().values()) == rejected
