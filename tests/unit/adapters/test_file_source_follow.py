"""File sources in follow mode: appends, partial lines, rotation, truncation, late files."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from adapters import CsvFileSource, JsonlFileSource, RawRecord

POLL = 0.005


def follow(path: Path, max_record_bytes: int = 1 << 20) -> JsonlFileSource:
    source = JsonlFileSource(
        "events", path, mode="follow", poll_interval_s=POLL, max_record_bytes=max_record_bytes
    )
    source.open(None)
    return source


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def collect(
    source: JsonlFileSource | CsvFileSource, count: int, budget_s: float = 5.0
) -> list[RawRecord]:
    """Fetch until ``count`` records arrived (fails after ``budget_s``)."""
    records: list[RawRecord] = []
    deadline = time.monotonic() + budget_s
    while len(records) < count and time.monotonic() < deadline:
        records.extend(source.fetch(100, timeout_s=0.05).records)
    assert len(records) == count, f"got {len(records)} of {count} records"
    return records


def values(records: list[RawRecord]) -> list[object]:
    return [r.fields["i"] if r.fields else r.error for r in records]


def split_key(key: str) -> tuple[str, int]:
    """(generation id, byte offset) of a file offset key."""
    generation, _, offset = key.rpartition(":")
    return generation, int(offset)


def test_appended_lines_are_seen(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"i": 0}\n')
    source = follow(path)
    assert values(collect(source, 1)) == [0]
    empty = source.fetch(100, timeout_s=0.05)
    assert empty.records == () and not empty.exhausted
    assert empty.position is not None
    assert {k: empty.position[k] for k in ("path", "inode", "offset", "epoch")} == {
        "path": str(path),
        "inode": os.stat(path).st_ino,
        "offset": 9,
        "epoch": 0,
    }
    assert empty.position["fingerprint"] == hashlib.sha256(b'{"i": 0}\n').hexdigest()
    assert empty.position["fingerprint_bytes"] == 9
    append(path, b'{"i": 1}\n{"i": 2}\n')
    assert values(collect(source, 2)) == [1, 2]
    source.close()


def test_fetch_returns_empty_within_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"")
    source = follow(path)
    started = time.monotonic()
    batch = source.fetch(100, timeout_s=0.1)
    elapsed = time.monotonic() - started
    assert batch.records == () and not batch.exhausted
    assert 0.09 <= elapsed < 1.0


def test_partial_line_is_delivered_once_its_newline_arrives(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"i": 0}\n{"i"')
    source = follow(path)
    first = collect(source, 1)
    assert values(first) == [0]
    assert source.fetch(100, timeout_s=0.05).records == ()  # half a line is not a record
    append(path, b": 1}\n")
    (second,) = collect(source, 1)
    assert second.fields == {"i": 1}
    assert split_key(second.offset_key) == (split_key(first[0].offset_key)[0], 9)
    assert second.offset_key.startswith(f"{os.stat(path).st_ino}-")


def test_rotation_loses_nothing_from_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"i": 0}\n')
    source = follow(path)
    assert values(collect(source, 1)) == [0]
    old_inode = os.stat(path).st_ino
    append(path, b'{"i": 1}\n{"i": 2}')  # written just before rotation, last line unterminated
    path.rename(tmp_path / "events.jsonl.1")
    path.write_bytes(b'{"i": 3}\n{"i": 4}\n')
    new_inode = os.stat(path).st_ino
    records = collect(source, 4)
    assert values(records) == [1, 2, 3, 4]
    keys = [split_key(r.offset_key) for r in records]
    assert [offset for _, offset in keys] == [9, 18, 0, 9]
    old, new = keys[0][0], keys[2][0]
    assert [generation for generation, _ in keys] == [old, old, new, new]
    assert old.startswith(f"{old_inode}-") and new.startswith(f"{new_inode}-")
    append(path, b'{"i": 5}\n')
    assert values(collect(source, 1)) == [5]


def test_batches_never_mix_files_so_positions_stay_exact(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"i": 0}\n')
    source = follow(path)
    collect(source, 1)
    append(path, b'{"i": 1}\n')
    path.rename(tmp_path / "events.jsonl.1")
    path.write_bytes(b'{"i": 2}\n')
    first = source.fetch(100, timeout_s=1)
    second = source.fetch(100, timeout_s=1)
    assert values(list(first.records)) == [1] and values(list(second.records)) == [2]
    assert first.position is not None and second.position is not None
    assert first.position["inode"] != second.position["inode"]
    assert second.position["offset"] == 9


def test_deleted_then_recreated_file_is_followed(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"i": 0}\n')
    source = follow(path)
    collect(source, 1)
    path.unlink()
    assert source.fetch(100, timeout_s=0.05).records == ()
    path.write_bytes(b'{"i": 1}\n')
    assert values(collect(source, 1)) == [1]


def test_truncation_restarts_at_the_beginning(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"i": 0}\n{"i": 1}\n{"i": 2}\n')
    source = follow(path)
    before = collect(source, 3)
    with path.open("r+b") as handle:  # copytruncate: same inode, emptied, then written again
        handle.truncate(0)
    assert source.fetch(100, timeout_s=0.05).records == ()  # the reader sees it shrink
    append(path, b'{"i": 0}\n')  # the same bytes as the first line of the old content
    (record,) = collect(source, 1)
    assert record.fields == {"i": 0}
    generation, offset = split_key(record.offset_key)
    assert offset == 0 and generation.startswith(f"{os.stat(path).st_ino}-")
    assert record.offset_key != before[0].offset_key  # a new generation: no clash in the store
    assert source.skipped == {}  # everything of the old content had been read


def test_waits_for_a_file_that_does_not_exist_yet(tmp_path: Path) -> None:
    path = tmp_path / "later.jsonl"
    source = follow(path)
    batch = source.fetch(100, timeout_s=0.05)
    assert batch.records == () and batch.position is None
    assert source.lag == 0
    path.write_bytes(b'{"i": 0}\n')
    assert values(collect(source, 1)) == [0]


def test_restart_resumes_after_the_committed_batch(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"i": 0}\n{"i": 1}\n')
    first = follow(path)
    batch = first.fetch(100, timeout_s=1)
    first.ack(batch)
    append(path, b'{"i": 2}\n')
    uncommitted = first.fetch(100, timeout_s=1)  # fetched, but the daemon dies before committing
    assert values(list(uncommitted.records)) == [2]
    first.close()

    append(path, b'{"i": 3}\n')
    restarted = JsonlFileSource("events", path, mode="follow", poll_interval_s=POLL)
    restarted.open(batch.position)
    records = collect(restarted, 2)
    assert values(records) == [2, 3]
    assert records[0].offset_key == uncommitted.records[0].offset_key  # same key: idempotent


def test_restart_after_rotation_reads_the_new_file_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"i": 0}\n')
    first = follow(path)
    batch = first.fetch(100, timeout_s=1)
    first.close()
    path.rename(tmp_path / "events.jsonl.1")
    path.write_bytes(b'{"i": 1}\n')
    restarted = JsonlFileSource("events", path, mode="follow", poll_interval_s=POLL)
    restarted.open(batch.position)
    assert values(collect(restarted, 1)) == [1]


def test_lag_follows_appends_and_fetches(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"i": 0}\n')
    source = follow(path)
    assert source.lag == 9
    collect(source, 1)
    assert source.lag == 0
    append(path, b'{"i": 1}\n{"i": 2}\n')
    assert source.lag == 18
    path.rename(tmp_path / "events.jsonl.1")
    path.write_bytes(b'{"i": 3}\n')
    assert source.lag == 27  # the rest of the old file and all of the new one


def test_csv_header_is_read_again_from_a_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "flows.csv"
    path.write_text("a,b\n1,2\n")
    source = CsvFileSource("flows", path, mode="follow", poll_interval_s=POLL)
    source.open(None)
    assert [r.fields for r in collect(source, 1)] == [{"a": "1", "b": "2"}]
    path.rename(tmp_path / "flows.csv.1")
    path.write_text("x,y,z\n3,4,5\n")
    assert [r.fields for r in collect(source, 1)] == [{"x": "3", "y": "4", "z": "5"}]
    assert source.columns == ["x", "y", "z"]


def test_csv_header_written_late_is_not_a_record(tmp_path: Path) -> None:
    path = tmp_path / "flows.csv"
    path.write_text("a,")
    source = CsvFileSource("flows", path, mode="follow", poll_interval_s=POLL)
    source.open(None)
    assert source.fetch(10, timeout_s=0.05).records == ()
    append(path, b"b\n1,2\n")
    assert [r.fields for r in collect(source, 1)] == [{"a": "1", "b": "2"}]


def test_oversize_line_in_follow_mode(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"i": 0}\n' + b"x" * 5000)
    source = follow(path, max_record_bytes=100)
    assert values(collect(source, 1)) == [0]
    append(path, b"x" * 5000 + b'\n{"i": 2}\n')
    records: list[RawRecord] = collect(source, 2)
    assert values(records) == ["oversize", 2]


def test_lines_written_between_end_of_file_and_rotation_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"i": 0}\n')
    source = follow(path)
    collect(source, 1)
    real_stat = os.stat

    def writer_races_the_reader(target: object, *args: object, **kwargs: object) -> os.stat_result:
        # after the reader saw the end of the old file, the writer adds a line and rotates
        if target == path and not (tmp_path / "events.jsonl.1").exists():
            append(path, b'{"i": 1}\n')
            path.rename(tmp_path / "events.jsonl.1")
            path.write_bytes(b'{"i": 2}\n')
        return real_stat(target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", writer_races_the_reader)
    assert values(collect(source, 2)) == [1, 2]
