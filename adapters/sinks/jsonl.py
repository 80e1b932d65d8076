"""Alerts as JSON lines appended to a file, for SIEM collectors (as Suricata's EVE log and
Falco's file output do): one object per line, whole lines only, each batch flushed and fsynced
before it counts as delivered.

One line per alert::

    {"timestamp": "...", "event_type": "incident", "delivery_id": "...", "incident": {...}}

``timestamp`` is when the alert was queued (the incident's commit), ``delivery_id`` the same
id a redelivery would carry, so a collector can drop the lines a crash made it see twice.

Log rotation works both ways logrotate does it: after ``create`` (the file renamed away and a
new one created) the next batch notices that the path no longer names the file it holds open
(device and inode differ, or the path is gone) and opens the path afresh; ``reopen()`` (the
agent calls it on SIGHUP, as logrotate's ``postrotate`` may ask) does the same at the next
batch. ``copytruncate`` is not needed, and loses lines written between its copy and its
truncate. A batch that fails half-way (disk full) is cut back to the last whole line it
started from, so a collector never reads a torn line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import ClassVar

import orjson

from adapters.sinks.base import REASON_IO_ERROR, Delivery, SendFailure, SendResult, never

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


class JsonlSink:
    """Append each alert as one JSON line to ``path``.

    Parameters
    ----------
    name
        The sink's name (labels metrics and log lines).
    path
        The file; created if missing (the directory must exist), appended to otherwise.
    file_mode
        Permissions of a file this sink creates, before the process umask.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from datetime import datetime, UTC
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "alerts.jsonl"
    >>> sink = JsonlSink("siem", path)
    >>> when = datetime(2026, 12, 1, tzinfo=UTC)
    >>> sink.send([Delivery("d-1", "incident", {"id": 1}, when)]).delivered
    ('d-1',)
    >>> path.read_text()
    '{"timestamp":"2026-12-01T00:00:00+00:00","event_type":"incident","delivery_id":"d-1","incident":{"id":1}}\\n'
    >>> sink.close()
    """

    #: alerts per pass: one write and one fsync for all of them
    batch_limit: ClassVar[int] = 500

    def __init__(self, name: str, path: Path | str, *, file_mode: int = 0o640) -> None:
        self.name = name
        self.path = Path(path)
        self._file_mode = file_mode
        self._fd: int | None = None
        # A plain flag, not an Event: reopen() runs in a signal handler, which must not block.
        self._reopen_requested = False

    def __repr__(self) -> str:
        return f"JsonlSink(name={self.name!r}, path={str(self.path)!r})"

    def send(self, deliveries: Sequence[Delivery], *,
             should_stop: Callable[[], bool] = never) -> SendResult:
        if not deliveries or should_stop():
            return SendResult()
        lines = b"".join(_line(delivery) for delivery in deliveries)
        try:
            fd = self._current_file()
            start = os.fstat(fd).st_size
            try:
                _write_all(fd, lines)
                os.fsync(fd)
            except OSError:
                with suppress(OSError):  # best effort: leave no torn line behind
                    os.ftruncate(fd, start)
                raise
        except OSError as error:
            self._close_file()  # open afresh next time: the file may be gone or replaced
            reason = error.strerror or type(error).__name__
            return SendResult((), SendFailure(deliveries[0].delivery_id, REASON_IO_ERROR,
                                              f"cannot append to {self.path}: {reason}"))
        return SendResult(tuple(delivery.delivery_id for delivery in deliveries))

    def reopen(self) -> None:
        """Open the path afresh before the next batch (SIGHUP after an external rotation)."""
        self._reopen_requested = True

    def close(self) -> None:
        self._close_file()

    def _current_file(self) -> int:
        """The open file for ``path``, reopened if asked to or if the path moved on."""
        if self._reopen_requested:
            self._reopen_requested = False
            self._close_file()
        if self._fd is not None and not self._still_at_path(self._fd):
            self._close_file()
        if self._fd is None:
            self._fd = os.open(self.path, _OPEN_FLAGS, self._file_mode)
            _fsync_directory(self.path.parent)  # the new name must survive a crash too
        return self._fd

    def _still_at_path(self, fd: int) -> bool:
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)

    def _close_file(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with suppress(OSError):
                os.close(fd)


def _line(delivery: Delivery) -> bytes:
    record = {
        "timestamp": delivery.created_at.isoformat(),
        "event_type": delivery.event_type,
        "delivery_id": delivery.delivery_id,
        delivery.event_type: delivery.payload,
    }
    return orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS) + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    with suppress(OSError):  # not every filesystem lets a directory be opened or synced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
