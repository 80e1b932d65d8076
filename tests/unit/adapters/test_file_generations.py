"""Follow mode across file generations: nothing lost, nothing doubled, every loss counted.

The scenarios come from fault injection: rotation while the agent is down or behind, a deleted
file's inode handed to the next file, ``copytruncate``. Each test plays the daemon: it fetches,
"commits" by acknowledging and keeping the batch's position, stops, and restarts from the
committed position, then checks which lines were delivered, how often, under which keys.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from adapters import JsonlFileSource, RawRecord

POLL = 0.005
LINE_BYTES = 23  # len(line(0, 0))


def line(gen: int, i: int) -> bytes:
    return b'{"gen": %d, "i": %5d}\n' % (gen, i)  # fixed width: offsets are predictable


def lines(gen: int, count: int, start: int = 0) -> bytes:
    return b"".join(line(gen, i) for i in range(start, start + count))


def ids(records: list[RawRecord]) -> list[tuple[int, int]]:
    return [(r.fields["gen"], r.fields["i"]) for r in records if r.fields is not None]


def expected(*generations: tuple[int, int, int]) -> list[tuple[int, int]]:
    """(gen, i) for each (gen, first, stop) range, in order."""
    return [(gen, i) for gen, first, stop in generations for i in range(first, stop)]


class Daemon:
    """Fetch, commit (ack and keep the position), stop and restart, as the agent does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.position: dict[str, Any] | None = None
        self.records: list[RawRecord] = []
        self.skipped: Counter[str] = Counter()
        self.source: JsonlFileSource | None = None

    def start(self, position: dict[str, Any] | None = None) -> JsonlFileSource:
        self.source = JsonlFileSource("events", self.path, mode="follow", poll_interval_s=POLL)
        self.source.open(self.position if position is None else position)
        return self.source

    def commit(self, max_records: int = 1000) -> int:
        assert self.source is not None
        batch = self.source.fetch(max_records, timeout_s=0.05)
        if batch.records:
            self.records.extend(batch.records)
            self.source.ack(batch)
            self.position = batch.position
        return len(batch.records)

    def drain(self) -> None:
        """Commit until two fetches in a row bring nothing."""
        quiet = 0
        while quiet < 2:
            quiet = 0 if self.commit() else quiet + 1

    def stop(self) -> None:
        assert self.source is not None
        self.skipped.update(self.source.take_skipped())
        self.source.close()
        self.source = None

    def keys(self) -> list[str]:
        return [r.offset_key for r in self.records]


@pytest.fixture
def live(tmp_path: Path) -> Path:
    return tmp_path / "live.jsonl"


# --- (a) rotation while the agent is down or behind ----------------------------------------


@pytest.mark.parametrize("rotated_name", ["live.jsonl.1", "live.jsonl-20261130"])
def test_rotation_while_down_finishes_the_rotated_file_first(live: Path, rotated_name: str) -> None:
    live.write_bytes(lines(1, 500))
    daemon = Daemon(live)
    daemon.start()
    daemon.commit(100)
    daemon.stop()  # 400 lines of the old file not read yet
    live.rename(live.with_name(rotated_name))
    live.write_bytes(lines(2, 200))
    daemon.start()
    daemon.drain()
    daemon.stop()
    assert ids(daemon.records) == expected((1, 0, 500), (2, 0, 200))
    assert len(set(daemon.keys())) == 700
    assert daemon.skipped == {}


def test_rotated_then_compressed_while_down_is_read_from_the_gzip(live: Path) -> None:
    live.write_bytes(lines(1, 300))
    daemon = Daemon(live)
    daemon.start()
    daemon.commit(100)
    daemon.stop()
    rotated = live.with_name("live.jsonl.1")
    live.rename(rotated)
    with rotated.open("rb") as plain, gzip.open(rotated.with_name("live.jsonl.1.gz"), "wb") as gz:
        shutil.copyfileobj(plain, gz)  # logrotate's compress, then the plain file goes
    rotated.unlink()
    live.write_bytes(lines(2, 50))
    daemon.start()
    daemon.drain()
    daemon.stop()
    assert ids(daemon.records) == expected((1, 0, 300), (2, 0, 50))
    assert daemon.skipped == {}


def test_every_generation_rotated_while_down_is_read_in_order(live: Path) -> None:
    live.write_bytes(lines(1, 300))
    daemon = Daemon(live)
    daemon.start()
    daemon.commit(100)
    daemon.stop()
    live.rename(live.with_name("live.jsonl.1"))
    live.write_bytes(lines(2, 200))
    os.utime(live, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    live.with_name("live.jsonl.1").rename(live.with_name("live.jsonl.2"))
    live.rename(live.with_name("live.jsonl.1"))
    live.write_bytes(lines(3, 100))
    os.utime(live, ns=(2_000_000_001_000_000_000, 2_000_000_001_000_000_000))
    daemon.start()
    daemon.drain()
    daemon.stop()
    assert ids(daemon.records) == expected((1, 0, 300), (2, 0, 200), (3, 0, 100))
    assert len(set(daemon.keys())) == 600


def test_a_later_generation_compressed_while_down_is_reported_not_read(
    live: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live.write_bytes(lines(1, 300))
    daemon = Daemon(live)
    daemon.start()
    daemon.commit(100)
    daemon.stop()
    live.rename(live.with_name("live.jsonl.2"))
    second = lines(2, 200)
    compressed = live.with_name("live.jsonl.1.gz")
    compressed.write_bytes(gzip.compress(second, mtime=0))  # rotated, compressed at once,
    os.utime(compressed, ns=(2_000_000_000_000_000_000,) * 2)  # its time kept, as gzip does
    live.write_bytes(lines(3, 100))
    with caplog.at_level(logging.WARNING):
        daemon.start()
        daemon.drain()
    daemon.stop()
    assert ids(daemon.records) == expected((1, 0, 300), (3, 0, 100))
    assert daemon.skipped == {"compressed": len(second)}
    assert "live.jsonl.1.gz" in caplog.text


def test_rotations_while_the_reader_is_behind_lose_no_generation(live: Path) -> None:
    live.write_bytes(lines(1, 300))
    daemon = Daemon(live)
    daemon.start()
    daemon.commit(100)  # running, but behind: two rotations happen before it catches up
    live.rename(live.with_name("live.jsonl.1"))
    live.write_bytes(lines(2, 200))
    os.utime(live, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    live.with_name("live.jsonl.1").rename(live.with_name("live.jsonl.2"))
    live.rename(live.with_name("live.jsonl.1"))
    live.write_bytes(lines(3, 100))
    os.utime(live, ns=(2_000_000_001_000_000_000, 2_000_000_001_000_000_000))
    daemon.drain()
    daemon.stop()
    assert ids(daemon.records) == expected((1, 0, 300), (2, 0, 200), (3, 0, 100))


def test_keys_are_the_same_with_or_without_a_restart_across_rotation(tmp_path: Path) -> None:
    def run(directory: Path, restart: bool) -> list[str]:
        directory.mkdir()
        path = directory / "live.jsonl"
        path.write_bytes(lines(1, 300))
        daemon = Daemon(path)
        daemon.start()
        daemon.commit(100)
        if restart:
            daemon.stop()
        path.rename(directory / "live.jsonl.1")
        path.write_bytes(lines(2, 100))
        if restart:
            daemon.start()
        daemon.drain()
        daemon.stop()
        return [key.split("-", 1)[1] for key in daemon.keys()]  # the inodes differ per run

    assert run(tmp_path / "a", restart=False) == run(tmp_path / "b", restart=True)


def test_a_window_rewind_into_a_rotated_file_rereads_the_same_keys(live: Path) -> None:
    live.write_bytes(lines(1, 300))
    daemon = Daemon(live)
    source = daemon.start()
    daemon.commit(100)
    rewind = source.position_at(daemon.records[50].offset_key)  # what the pipeline stores
    daemon.commit(100)
    daemon.stop()
    live.rename(live.with_name("live.jsonl.1"))
    live.write_bytes(lines(2, 10))
    assert rewind is not None
    replay = Daemon(live)
    assert replay.start(rewind).can_resume(rewind)
    replay.drain()
    replay.stop()
    assert ids(replay.records) == expected((1, 50, 300), (2, 0, 10))
    assert replay.keys()[:150] == daemon.keys()[50:200]


# --- (b) a deleted file's inode reused by the next one -------------------------------------


def test_a_reused_inode_is_not_resumed_at_the_old_offset(live: Path) -> None:
    live.write_bytes(lines(1, 400))
    daemon = Daemon(live)
    daemon.start()
    daemon.drain()
    daemon.stop()
    live.unlink()
    live.write_bytes(lines(2, 405))  # longer than the old file, so size alone cannot tell
    assert daemon.position is not None
    reused = dict(daemon.position, inode=os.stat(live).st_ino)  # what inode reuse looks like
    daemon.start(reused)
    daemon.drain()
    daemon.stop()
    assert ids(daemon.records) == expected((1, 0, 400), (2, 0, 405))
    old_keys, new_keys = set(daemon.keys()[:400]), set(daemon.keys()[400:])
    assert not old_keys & new_keys  # same offsets, same inode, other generation
    assert daemon.skipped == {}  # the old file had been read to its end


def test_a_reused_inode_counts_the_unread_rest_of_the_old_file(
    live: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live.write_bytes(lines(1, 400))
    daemon = Daemon(live)
    daemon.start()
    daemon.commit(100)
    daemon.stop()
    live.unlink()
    live.write_bytes(lines(2, 50))
    assert daemon.position is not None
    with caplog.at_level(logging.WARNING):
        daemon.start(dict(daemon.position, inode=os.stat(live).st_ino))
    daemon.drain()
    daemon.stop()
    assert ids(daemon.records) == expected((1, 0, 100), (2, 0, 50))
    assert daemon.skipped == {"replaced": 300 * LINE_BYTES}
    assert "6900 bytes were never read" in caplog.text


# --- (c) copytruncate ----------------------------------------------------------------------


def copytruncate(path: Path, keep_copy: bool = True) -> None:
    if keep_copy:
        shutil.copyfile(path, path.with_name(path.name + ".1"))
    os.truncate(path, 0)


def test_copytruncate_while_down_with_content_as_long_as_before(live: Path) -> None:
    live.write_bytes(lines(1, 400))
    daemon = Daemon(live)
    daemon.start()
    daemon.drain()
    daemon.stop()
    copytruncate(live)
    with live.open("ab") as handle:
        handle.write(lines(2, 400))  # same length: a size check alone would resume at the end
    daemon.start()
    daemon.drain()
    daemon.stop()
    assert ids(daemon.records) == expected((1, 0, 400), (2, 0, 400))
    assert daemon.skipped == {}


def test_copytruncate_while_down_finishes_the_old_content_from_the_copy(live: Path) -> None:
    live.write_bytes(lines(1, 400))
    daemon = Daemon(live)
    daemon.start()
    daemon.commit(100)
    daemon.stop()
    copytruncate(live)
    with live.open("ab") as handle:
        handle.write(lines(2, 30))
    daemon.start()
    daemon.drain()
    daemon.stop()
    assert ids(daemon.records) == expected((1, 0, 400), (2, 0, 30))
    assert daemon.skipped == {}


def test_copytruncate_behind_a_fast_writer_takes_the_rest_from_the_copy(live: Path) -> None:
    live.write_bytes(lines(1, 400))
    daemon = Daemon(live)
    daemon.start()
    daemon.commit(100)  # running, 300 lines behind
    copytruncate(live)
    with live.open("ab") as handle:  # the writer refills it past the reader's offset at once
        handle.write(lines(2, 500))
    daemon.drain()
    daemon.stop()
    assert ids(daemon.records) == expected((1, 0, 400), (2, 0, 500))
    assert daemon.skipped == {}


def test_copytruncate_without_a_copy_counts_what_was_never_read(
    live: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live.write_bytes(lines(1, 60_000))  # more than one read: part of it is never read
    daemon = Daemon(live)
    daemon.start()
    daemon.commit(100)
    copytruncate(live, keep_copy=False)
    with live.open("ab") as handle:
        handle.write(lines(2, 500))
    with caplog.at_level(logging.WARNING):
        daemon.drain()
    daemon.stop()
    delivered = ids(daemon.records)
    old = [i for gen, i in delivered if gen == 1]
    assert old == list(range(len(old))) and 100 <= len(old) < 60_000
    assert delivered[len(old) :] == expected((2, 0, 500))
    assert daemon.skipped == {"truncated": (60_000 - len(old)) * LINE_BYTES}
    assert "truncated" in caplog.text and "never read" in caplog.text


def test_bytes_written_between_the_copy_and_the_truncation_are_counted(live: Path) -> None:
    live.write_bytes(lines(1, 400))
    daemon = Daemon(live)
    daemon.start()
    daemon.commit(100)
    shutil.copyfile(live, live.with_name("live.jsonl.1"))
    with live.open("ab") as handle:  # after the copy, before the truncation: unrecoverable
        handle.write(lines(1, 20, start=400))
    assert daemon.source is not None and daemon.source.lag == 320 * LINE_BYTES  # seen
    os.truncate(live, 0)
    daemon.drain()
    daemon.stop()
    assert ids(daemon.records) == expected((1, 0, 400))
    assert daemon.skipped == {"truncated": 20 * LINE_BYTES}


# --- (f) what cannot be read is counted and logged -----------------------------------------


def test_a_rotated_file_deleted_while_down_is_counted_and_logged(
    live: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live.write_bytes(lines(1, 400))
    daemon = Daemon(live)
    daemon.start()
    daemon.commit(100)
    daemon.stop()
    rotated = live.with_name("live.jsonl.1")
    live.rename(rotated)
    live.write_bytes(lines(2, 50))  # created before the delete, so its inode is a new one
    rotated.unlink()
    with caplog.at_level(logging.WARNING, logger="adapters"):
        source = daemon.start()
    assert source.skipped == {"rotated_missing": 300 * LINE_BYTES}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "rotated away and is gone" in warnings[0].getMessage()
    daemon.drain()
    daemon.stop()
    assert ids(daemon.records) == expected((1, 0, 100), (2, 0, 50))
    assert daemon.skipped == {"rotated_missing": 300 * LINE_BYTES}


def test_a_rotated_file_read_to_its_end_and_deleted_is_not_a_loss(
    live: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live.write_bytes(lines(1, 100))
    daemon = Daemon(live)
    daemon.start()
    daemon.drain()
    daemon.stop()
    live.rename(live.with_name("live.jsonl.1"))
    live.write_bytes(lines(2, 50))
    live.with_name("live.jsonl.1").unlink()
    with caplog.at_level(logging.WARNING):
        daemon.start()
        daemon.drain()
    daemon.stop()
    assert ids(daemon.records) == expected((1, 0, 100), (2, 0, 50))
    assert daemon.skipped == {} and not caplog.records


def test_a_damaged_rotated_gzip_is_counted_and_the_live_file_still_read(live: Path) -> None:
    live.write_bytes(lines(1, 2000))
    daemon = Daemon(live)
    daemon.start()
    daemon.commit(100)
    daemon.stop()
    compressed = gzip.compress(lines(1, 2000), mtime=0)
    live.with_name("live.jsonl.1.gz").write_bytes(compressed[: len(compressed) // 2])
    live.unlink()  # rotated, compressed, and the compression cut short
    live.write_bytes(lines(2, 10))
    daemon.start()
    daemon.drain()
    daemon.stop()
    good = [i for gen, i in ids(daemon.records) if gen == 1]
    assert good == list(range(len(good))) and 100 < len(good) < 2000
    assert ids(daemon.records)[-10:] == expected((2, 0, 10))
    cut = sum(len(r.raw) for r in daemon.records if r.fields is None)  # the line cut in half
    assert daemon.skipped["unreadable"] == (2000 - len(good)) * LINE_BYTES - cut


# --- positions written before fingerprints ---------------------------------------------------


def test_a_position_without_fingerprint_still_resumes(
    live: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live.write_bytes(lines(1, 50))
    old_format = {"path": str(live), "inode": os.stat(live).st_ino, "offset": 20 * LINE_BYTES}
    daemon = Daemon(live)
    with caplog.at_level(logging.INFO):
        daemon.start(old_format)
    daemon.drain()
    daemon.stop()
    assert ids(daemon.records) == expected((1, 20, 50))
    assert "predates fingerprints" in caplog.text
    assert daemon.position is not None and daemon.position["fingerprint_bytes"] == 1024


def test_a_position_without_fingerprint_past_the_end_reads_from_the_start(live: Path) -> None:
    live.write_bytes(lines(1, 10))
    old_format = {"path": str(live), "inode": os.stat(live).st_ino, "offset": 20 * LINE_BYTES}
    daemon = Daemon(live)
    daemon.start(old_format)
    daemon.drain()
    daemon.stop()
    assert ids(daemon.records) == expected((1, 0, 10))


@pytest.mark.parametrize(
    "change",
    [{"fingerprint": "xyz"}, {"fingerprint_bytes": None}, {"epoch": -1}, {"size": "9"}],
)
def test_a_damaged_position_is_a_source_error(live: Path, change: dict[str, Any]) -> None:
    from adapters import SourceError

    live.write_bytes(lines(1, 10))
    daemon = Daemon(live)
    daemon.start()
    daemon.commit()
    daemon.stop()
    assert daemon.position is not None
    with pytest.raises(SourceError, match="delete it"):
        daemon.start(dict(daemon.position, **change))


def test_the_skip_reasons_are_the_ones_the_metric_knows() -> None:
    from adapters.base import ERROR_CODES, SKIP_REASONS
    from agent.metrics import REJECT_REASONS
    from agent.metrics import SKIP_REASONS as METRIC_SKIP_REASONS

    assert set(METRIC_SKIP_REASONS) == SKIP_REASONS
    assert ERROR_CODES <= set(REJECT_REASONS)
