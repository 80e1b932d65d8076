"""Rotation, inode reuse, copytruncate and invisible lines, end to end into a SQLite store.

Each test runs the real agent (reference fit, pipeline, detectors, store) over a followed CSV
file of NSL-KDD records, stops it, does to the file what log rotation does, restarts it, and
counts what the database and the metrics say: every line written is processed or quarantined
exactly once, and what cannot be read is counted.
"""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from adapters import CsvFileSource
from agent.config import load_config
from agent.metrics import Metrics
from agent.service import Agent
from storage import Store

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nsl-kdd"
SOURCE = "live"


@lru_cache(maxsize=1)
def _sample() -> tuple[bytes, ...]:
    with gzip.open(SAMPLE / "stream.csv.gz", "rb") as stream:
        return tuple(line + b"\n" for line in stream.read().splitlines())


def records(first: int, stop: int) -> bytes:
    """NSL-KDD lines ``first`` to ``stop`` of the bundled stream, as a file's bytes."""
    return b"".join(_sample()[first:stop])


class Run:
    """One agent process over the followed file: start, process a number of records, stop."""

    def __init__(self, config_path: Path, path: Path) -> None:
        self.config = load_config(config_path, need_token=False)
        self.metrics = Metrics()
        self.agent = Agent(self.config, metrics=self.metrics)
        self.agent.prepare()
        self.source = CsvFileSource(SOURCE, path, mode="follow", header=False,
                                    columns=self.config.schema.columns, poll_interval_s=0.01,
                                    max_record_bytes=self.config.schema.max_record_bytes)
        self.agent.attach(self.source)

    def process(self, count: int, timeout_s: float = 20.0) -> int:
        """Process until ``count`` records in all were received here; returns how many were."""
        timer = threading.Timer(timeout_s, self.agent.stop_event.set)
        timer.start()
        try:
            return self.agent.run_sources(stop_when_exhausted=False, limit=count).received
        finally:
            timer.cancel()

    def nothing_more(self) -> bool:
        """No record is left to read (fetched outside the pipeline, so nothing is committed)."""
        return self.source.fetch(1000, timeout_s=0.2).records == ()

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, {"source": SOURCE, **labels})
        return 0.0 if value is None else value

    def stop(self) -> None:
        self.agent.close()


def committed(config_path: Path) -> tuple[int, int]:
    """(processed, rejected) as committed with the source position."""
    store = Store(load_config(config_path, need_token=False).storage_url())
    position = store.load_position(SOURCE) or {}
    store.close()
    return int(position.get("processed", 0)), int(position.get("rejected", 0))


def quarantine(config_path: Path) -> dict[str, int]:
    store = Store(load_config(config_path, need_token=False).storage_url())
    try:
        return store.count_quarantine()
    finally:
        store.close()


def test_rotation_while_down_loses_and_doubles_nothing(
        write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = write_config(**{"pipeline.batch_size": 500})
    live = tmp_path / "live.csv"
    live.write_bytes(records(0, 3000))
    first = Run(config, live)
    assert first.process(1000) == 1000
    first.stop()  # 2,000 lines of this file are not read yet
    live.rename(tmp_path / "live.csv.1")
    live.write_bytes(records(3000, 5000))

    second = Run(config, live)  # resumes at the window rewind point inside live.csv.1
    assert second.process(4000) == 4000
    assert second.nothing_more()
    second.stop()
    processed, rejected = committed(config)
    assert processed + rejected == 5000, "every line of both files, exactly once"
    assert sum(quarantine(config).values()) == rejected
    assert second.metric("metasentry_records_received_total") == 4000
    assert second.metric("metasentry_source_skipped_bytes_total", reason="rotated_missing") == 0


def _reuse_inode(config: Path, live: Path) -> None:
    """Make the stored positions name ``live``'s inode: exactly what inode reuse looks like."""
    store = Store(load_config(config, need_token=False).storage_url())
    position = store.load_position(SOURCE)
    assert position is not None
    for key in ("source", "rewind"):
        if position.get(key):
            position[key]["inode"] = os.stat(live).st_ino
    store.commit_batch(source=SOURCE, position=position)
    store.close()


def test_a_reused_inode_is_read_from_its_start(
        write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = write_config(**{"pipeline.batch_size": 500,
                             "detectors.feature_drift.enabled": False})
    live = tmp_path / "live.csv"
    live.write_bytes(records(0, 1000))
    first = Run(config, live)
    assert first.process(1000) == 1000
    first.stop()
    live.unlink()
    live.write_bytes(records(1000, 2200))  # longer than the old file: size alone cannot tell
    _reuse_inode(config, live)

    second = Run(config, live)
    assert second.process(1200) == 1200
    assert second.nothing_more()
    second.stop()
    processed, rejected = committed(config)
    assert processed + rejected == 2200


def test_a_window_rewind_into_a_replaced_file_loses_nothing(
        write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = write_config(**{"pipeline.batch_size": 500})
    live = tmp_path / "live.csv"
    live.write_bytes(records(0, 1000))
    first = Run(config, live)
    assert first.process(1000) == 1000
    first.stop()
    live.unlink()
    live.write_bytes(records(1000, 2200))
    _reuse_inode(config, live)

    second = Run(config, live)
    assert second.process(1200, timeout_s=10) == 1200
    second.stop()


def test_quarantine_keys_are_unique_across_file_generations(
        write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = write_config(**{"pipeline.batch_size": 500})
    live = tmp_path / "live.csv"
    good = _sample()[:400]
    content = b"".join(line + b"not,a,flow,record\n" for line in good)  # 400 good, 400 bad
    live.write_bytes(content)
    run = Run(config, live)
    assert run.process(800) == 800
    os.truncate(live, 0)  # copytruncate while the agent runs (the copy is not needed here)
    assert run.nothing_more()  # it notices the truncation
    live.write_bytes(content)  # the same bytes again: new events at the same offsets
    assert run.process(1600) == 1600
    assert run.nothing_more()
    run.stop()
    assert quarantine(config) == {"csv_columns": 800}
    assert run.metric("metasentry_records_rejected_total", reason="csv_columns") == 800
    assert committed(config)[1] == 800


def test_lines_of_whitespace_are_quarantined_and_counted(
        write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = write_config(**{"pipeline.batch_size": 500})
    invisible = ["\x1c", "\x1d", "\x1e", "\x1f", "\x0b", "\x0c", "\x85", "\xa0", "\u2028",
                 "\u3000"]
    live = tmp_path / "live.csv"
    lines = list(_sample()[:500])
    for i in range(100):  # every fifth line holds nothing visible
        lines.insert(i * 6, invisible[i % len(invisible)].encode() + b"\n")
    live.write_bytes(b"".join(lines) + b"\n\r\n")  # and two empty lines, which carry nothing
    run = Run(config, live)
    assert run.process(600) == 600
    assert run.nothing_more()
    run.stop()
    assert quarantine(config).get("blank") == 100
    assert run.metric("metasentry_records_rejected_total", reason="blank") == 100
    processed, rejected = committed(config)
    assert processed + rejected == 600


def test_a_rotated_file_gone_while_down_is_counted_in_the_metrics(
        write_config: Callable[..., Path], tmp_path: Path) -> None:
    # Without windowed detectors the agent resumes at its last commit: the position that
    # knows how long the file was. (With them it rewinds; see the report on can_resume.)
    config = write_config(**{"pipeline.batch_size": 500,
                             "detectors.feature_drift.enabled": False})
    live = tmp_path / "live.csv"
    old = records(0, 3000)
    live.write_bytes(old)
    first = Run(config, live)
    assert first.process(1000) == 1000
    first.stop()
    offset = len(records(0, 1000))
    live.rename(tmp_path / "live.csv.1")
    live.write_bytes(records(3000, 3500))
    (tmp_path / "live.csv.1").unlink()  # rotated and deleted before the agent came back

    second = Run(config, live)
    assert second.process(500) == 500
    assert second.nothing_more()
    second.stop()
    unread = len(old) - offset
    assert second.metric("metasentry_source_skipped_bytes_total",
                         reason="rotated_missing") == unread
    processed, rejected = committed(config)
    assert processed + rejected == 1500  # the 2,000 unread lines are gone, and counted above
