"""The JSON-lines sink: valid lines, whole lines only, and log rotation followed
(adapters/sinks/jsonl.py; the shared rules are in tests/contract)."""

from __future__ import annotations

import doctest
import errno
import os
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

import adapters.sinks.jsonl as jsonl
from adapters.sinks import Delivery, JsonlSink


def deliveries(*ids: int) -> list[Delivery]:
    when = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
    return [Delivery(f"d-{i}", "incident",
                     {"id": i, "record_excerpt": "a,b\nc\u2028d\x00", "score": 1.5}, when)
            for i in ids]


def lines(path: Path) -> list[dict[str, object]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n") or not raw
    return [orjson.loads(line) for line in raw.splitlines()]


def test_the_docstring_examples_run() -> None:
    assert doctest.testmod(jsonl).failed == 0


def test_each_alert_is_one_valid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    sink = JsonlSink("siem", path)

    assert sink.send(deliveries(1, 2, 3)).delivered == ("d-1", "d-2", "d-3")
    sink.close()

    written = lines(path)
    assert [line["delivery_id"] for line in written] == ["d-1", "d-2", "d-3"]
    assert written[0] == {"timestamp": "2026-12-01T12:30:00+00:00", "event_type": "incident",
                          "delivery_id": "d-1",
                          "incident": {"id": 1, "record_excerpt": "a,b\nc\u2028d\x00",
                                       "score": 1.5}}


def test_a_rotated_file_is_followed_to_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    sink = JsonlSink("siem", path)
    sink.send(deliveries(1))

    path.rename(tmp_path / "alerts.jsonl.1")  # logrotate's default (`create`)
    sink.send(deliveries(2))
    path.unlink()  # removed outright
    sink.send(deliveries(3))
    sink.close()

    assert [line["delivery_id"] for line in lines(tmp_path / "alerts.jsonl.1")] == ["d-1"]
    assert [line["delivery_id"] for line in lines(path)] == ["d-3"]


def test_reopen_switches_to_whatever_the_path_names_now(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    sink = JsonlSink("siem", path)
    sink.send(deliveries(1))
    # A collector that moves the file and puts a fresh one in place before the next write:
    # the identity check would also notice; reopen() (SIGHUP) does not need to.
    os.replace(path, tmp_path / "old.jsonl")
    path.write_bytes(b"")
    sink.reopen()
    sink.send(deliveries(2))
    sink.reopen()  # nothing rotated: it goes on appending to the same file
    sink.send(deliveries(3))
    sink.close()

    assert [line["delivery_id"] for line in lines(tmp_path / "old.jsonl")] == ["d-1"]
    assert [line["delivery_id"] for line in lines(path)] == ["d-2", "d-3"]


def test_a_write_that_fails_half_way_leaves_no_torn_line(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "alerts.jsonl"
    sink = JsonlSink("siem", path)
    sink.send(deliveries(1))
    before = path.read_bytes()

    def disk_full(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jsonl, "_write_all", disk_full)
    result = sink.send(deliveries(2, 3))
    assert result.delivered == ()
    assert result.failure is not None
    assert (result.failure.reason, result.failure.delivery_id) == ("io_error", "d-2")
    assert "No space left on device" in result.failure.detail
    assert path.read_bytes() == before

    monkeypatch.undo()
    assert sink.send(deliveries(2, 3)).delivered == ("d-2", "d-3")
    sink.close()
    assert [line["delivery_id"] for line in lines(path)] == ["d-1", "d-2", "d-3"]


def test_a_missing_directory_fails_until_it_exists(tmp_path: Path) -> None:
    path = tmp_path / "later" / "alerts.jsonl"
    sink = JsonlSink("siem", path)

    failure = sink.send(deliveries(1)).failure
    assert failure is not None and failure.reason == "io_error"
    assert str(path) in failure.detail

    path.parent.mkdir()
    assert sink.send(deliveries(1)).delivered == ("d-1",)
    sink.close()


def test_a_new_file_gets_the_requested_mode(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    old = os.umask(0o022)
    sink = JsonlSink("siem", path, file_mode=0o640)
    try:
        sink.send(deliveries(1))
    finally:
        os.umask(old)
        sink.close()
    assert path.stat().st_mode & 0o777 == 0o640
