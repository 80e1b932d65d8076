"""File-source fault injection: rotation, inode reuse, copytruncate, invisible lines, measured.

Each scenario writes uniquely numbered lines, plays the agent (fetch, commit by acknowledging
and keeping the position, stop, restart from the committed position) through the public
source API, and reports lines written, processed, quarantined, lost and duplicated, and what
the source counted as skipped. The numbers in docs/RELIABILITY.md come from it::

    python tests/integration/file_faults.py [--repeat N] [scenario ...]

It only uses `CsvFileSource`'s public methods (``take_skipped`` when it exists), so the same
file measures older versions of the source too. The tests in test_file_rotation.py and
tests/unit/adapters/test_file_generations.py check the same scenarios deterministically.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters import CsvFileSource, RawRecord

COLUMNS = ["gen", "i", "pad"]


def line(gen: int, i: int) -> bytes:
    return b"%d,%08d,payload\n" % (gen, i)


def lines(gen: int, count: int) -> bytes:
    return b"".join(line(gen, i) for i in range(count))


def texts(data: bytes) -> set[str]:
    return {text for text in data.decode().split("\n") if text}


class Agent:
    """The agent's view of one followed file: committed records and the committed position."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.position: dict[str, Any] | None = None
        self.records: list[RawRecord] = []
        self.skipped: Counter[str] = Counter()
        self.source: CsvFileSource | None = None

    def start(self) -> None:
        self.source = CsvFileSource("s", self.path, mode="follow", header=False,
                                    columns=COLUMNS, poll_interval_s=0.01)
        self.source.open(self.position)

    def step(self, max_records: int = 1000, timeout_s: float = 0.05) -> int:
        assert self.source is not None
        batch = self.source.fetch(max_records, timeout_s)
        if batch.records:
            self.records.extend(batch.records)
            self.source.ack(batch)
            self.position = batch.position
        return len(batch.records)

    def drain(self, idle_s: float = 0.3) -> None:
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            if self.step():
                last = time.monotonic()

    def stop(self) -> None:
        assert self.source is not None
        take = getattr(self.source, "take_skipped", None)
        if take is not None:
            self.skipped.update(take())
        self.source.close()
        self.source = None

    def summary(self, written: set[str]) -> dict[str, Any]:
        seen = Counter(record.raw for record in self.records)
        ok = sum(1 for record in self.records if record.fields is not None)
        return {
            "written": len(written),
            "processed": ok,
            "quarantined": len(self.records) - ok,
            "lost": len(written - set(seen)),
            "duplicated": sum(count - 1 for count in seen.values() if count > 1),
            "skipped_bytes": dict(self.skipped),
        }


def rotation_while_down(tmp: Path) -> dict[str, Any]:
    """50,000 lines, 10,000 read; down; ``mv live.csv live.csv.1``; 20,000 in a new file."""
    path = tmp / "live.csv"
    old, new = lines(1, 50_000), lines(2, 20_000)
    path.write_bytes(old)
    agent = Agent(path)
    agent.start()
    for _ in range(10):
        agent.step(1000)
    agent.stop()
    path.rename(tmp / "live.csv.1")
    path.write_bytes(new)
    agent.start()
    agent.drain()
    agent.stop()
    return agent.summary(texts(old) | texts(new))


def two_rotations_while_down(tmp: Path) -> dict[str, Any]:
    """30,000 lines, 10,000 read; down; two rotations (20,000 and 10,000 lines after them)."""
    path = tmp / "live.csv"
    first, second, third = lines(1, 30_000), lines(2, 20_000), lines(3, 10_000)
    path.write_bytes(first)
    agent = Agent(path)
    agent.start()
    for _ in range(10):
        agent.step(1000)
    agent.stop()
    path.rename(tmp / "live.csv.1")
    path.write_bytes(second)
    time.sleep(0.01)  # generations are ordered by modification time
    (tmp / "live.csv.1").rename(tmp / "live.csv.2")
    path.rename(tmp / "live.csv.1")
    path.write_bytes(third)
    agent.start()
    agent.drain()
    agent.stop()
    return agent.summary(texts(first) | texts(second) | texts(third))


def rm_recreate_inode_reuse(tmp: Path) -> dict[str, Any]:
    """10,000 lines all read; down; ``rm``; 10,005 new lines under the same inode."""
    path = tmp / "live.csv"
    old, new = lines(1, 10_000), lines(2, 10_005)
    path.write_bytes(old)
    agent = Agent(path)
    agent.start()
    agent.drain()
    agent.stop()
    old_inode = os.stat(path).st_ino
    path.unlink()
    path.write_bytes(new)
    reused = os.stat(path).st_ino == old_inode
    assert agent.position is not None
    agent.position["inode"] = os.stat(path).st_ino  # reuse, whether or not it happened here
    agent.start()
    agent.drain()
    agent.stop()
    return agent.summary(texts(old) | texts(new)) | {"inode_really_reused": reused}


def copytruncate_while_down(tmp: Path) -> dict[str, Any]:
    """20,000 lines all read; down; copytruncate; 20,000 new lines, as long as the old ones."""
    path = tmp / "live.csv"
    old, new = lines(1, 20_000), lines(2, 20_000)
    path.write_bytes(old)
    agent = Agent(path)
    agent.start()
    agent.drain()
    agent.stop()
    shutil.copyfile(path, tmp / "live.csv.1")
    os.truncate(path, 0)
    with path.open("ab") as handle:
        handle.write(new)
    agent.start()
    agent.drain()
    agent.stop()
    return agent.summary(texts(old) | texts(new))


def quarantine_keys_across_generations(tmp: Path) -> dict[str, Any]:
    """400 good and 400 bad lines; truncated while running; the same 800 lines again."""
    from storage import QuarantinedRecord, Store

    store = Store(f"sqlite:///{tmp / 'q.db'}")
    store.upgrade()
    path = tmp / "live.csv"
    content = b"".join(line(1, i) + b"bad line %08d\n" % i for i in range(400))
    path.write_bytes(content)
    agent = Agent(path)
    agent.start()
    committed = 0

    def commit() -> None:
        nonlocal committed
        rows = [QuarantinedRecord(source="s", offset_key=r.offset_key, reason=r.error or "",
                                  detail=r.detail or "", raw_excerpt=r.raw)
                for r in agent.records[committed:] if r.fields is None]
        committed = len(agent.records)
        store.commit_batch(source="s", position=agent.position, quarantine=rows)

    agent.drain()
    commit()
    os.truncate(path, 0)
    agent.step()  # the agent sees the file shrink
    with path.open("ab") as handle:
        handle.write(content)  # new events, the same bytes at the same offsets
    agent.drain()
    commit()
    agent.stop()
    rows = sum(store.count_quarantine().values())
    store.close()
    rejected = sum(1 for record in agent.records if record.fields is None)
    return {"written": 1600, "bad_lines": 800, "rejected_counted": rejected,
            "quarantine_rows": rows, "quarantine_rows_lost": 800 - rows}


def whitespace_lines(tmp: Path) -> dict[str, Any]:
    """500 records and 500 lines of whitespace or control characters, interleaved."""
    invisible = ["\x1c", "\x1d", "\x1e", "\x1f", "\x0b", "\x0c", "\x85", "\xa0", "\u2028",
                 "\u3000", " ", "\t", "\x1c \u2028"]
    path = tmp / "live.csv"
    path.write_bytes(b"".join(line(1, i) + invisible[i % len(invisible)].encode() + b"\n"
                              for i in range(500)))
    agent = Agent(path)
    agent.start()
    agent.drain()
    agent.stop()
    ok = sum(1 for record in agent.records if record.fields is not None)
    return {"written": 1000, "processed": ok, "quarantined": len(agent.records) - ok,
            "lost": 1000 - len(agent.records),
            "errors": dict(Counter(r.error for r in agent.records if r.error))}


def rotated_file_gone(tmp: Path) -> dict[str, Any]:
    """30,000 lines, 10,000 read; down; rotated, a new file of 5,000, the rotated one deleted."""
    path = tmp / "live.csv"
    old, new = lines(1, 30_000), lines(2, 5_000)
    path.write_bytes(old)
    agent = Agent(path)
    agent.start()
    for _ in range(10):
        agent.step(1000)
    agent.stop()
    path.rename(tmp / "live.csv.1")
    (tmp / "live.csv.1").unlink()
    path.write_bytes(new)  # after the delete, so the filesystem may hand it the freed inode
    agent.start()
    agent.drain()
    agent.stop()
    unread = len(old) - 10_000 * len(line(1, 0))
    return agent.summary(texts(old) | texts(new)) | {"unread_bytes_of_gone_file": unread}


def fast_writer(tmp: Path, *, keep_copy: bool, total: int = 85_000) -> dict[str, Any]:
    """A writer appending as fast as it can, the agent behind; copytruncate halfway through."""
    path = tmp / "live.csv"
    path.write_bytes(b"")
    agent = Agent(path)
    agent.start()
    written: list[bytes] = []

    def copytruncate() -> None:
        if keep_copy:
            shutil.copyfile(path, tmp / "live.csv.1")
        os.truncate(path, 0)

    def writer() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        for start in range(0, total, 100):
            chunk = [line(1, i) for i in range(start, min(start + 100, total))]
            os.write(fd, b"".join(chunk))
            written.extend(chunk)
            if start == total // 2:
                threading.Thread(target=copytruncate).start()
        os.close(fd)

    thread = threading.Thread(target=writer)
    thread.start()
    while thread.is_alive():
        agent.step(500, 0.01)
        time.sleep(0.002)  # the agent is slower than the writer: a backlog builds up
    thread.join()
    agent.drain()
    agent.stop()
    result = agent.summary({w.decode().rstrip("\n") for w in written})
    return result | {"lost_bytes": result["lost"] * len(line(1, 0))}


SCENARIOS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "rotation_while_down": rotation_while_down,
    "two_rotations_while_down": two_rotations_while_down,
    "rm_recreate_inode_reuse": rm_recreate_inode_reuse,
    "copytruncate_while_down": copytruncate_while_down,
    "quarantine_keys_across_generations": quarantine_keys_across_generations,
    "whitespace_lines": whitespace_lines,
    "rotated_file_gone": rotated_file_gone,
    "fast_writer_copytruncate": lambda tmp: fast_writer(tmp, keep_copy=True),
    "fast_writer_truncate_no_copy": lambda tmp: fast_writer(tmp, keep_copy=False),
}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", choices=[[], *SCENARIOS], default=[])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    for name in args.scenarios or list(SCENARIOS):
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                print(name, json.dumps(SCENARIOS[name](Path(tmp))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
