"""Reading a file's lines once (replay) or for as long as it lives (follow, like ``tail -F``).

Follow mode has to survive what log shippers do to files:

* rotation (the path is renamed away and a new file created): the old file is read to its end,
  a last line without newline included, before the new file is read from its start;
* truncation in place (``copytruncate``): when the file becomes shorter than what was read, the
  reader starts again at offset 0;
* a path that does not exist yet: the reader waits for it.

Rotation is noticed when the current file has no more data and the path names another inode.
Bytes a writer appends to the old file after that moment (before it reopens the path) are not
read; this is the same window ``tail -F`` has.

Offsets are byte positions in the file, or in the decompressed stream for ``.gz`` files, which
are replay-only and resume by decompressing and discarding up to the stored offset.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from adapters._lines import LineBlock, LineSplitter
from adapters.base import SourceError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
"""Read size: big enough that syscalls do not dominate, small enough to bound memory."""


def is_compressed(path: Path) -> bool:
    """Whether ``path`` is read through gzip (decided by its name, as ``zcat`` users expect)."""
    return path.suffix == ".gz"


@dataclass(frozen=True, slots=True)
class FileLines:
    """Lines read from the file whose inode is ``inode``."""

    inode: int
    block: LineBlock


class FileTail:
    """Line reader for one path in replay or follow mode.

    Parameters
    ----------
    path:
        The file to read; in follow mode it may not exist yet.
    follow:
        Keep waiting for appended lines and track rotation and truncation (``True``), or read
        to the end once (``False``).
    max_line_bytes:
        Longer lines are delivered as an excerpt flagged oversize.
    chunk_bytes:
        How much to read per system call.
    """

    def __init__(
        self, path: Path, *, follow: bool, max_line_bytes: int, chunk_bytes: int = CHUNK_BYTES
    ) -> None:
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be at least 1, got {chunk_bytes}.")
        if follow and is_compressed(path):
            raise ValueError(
                f"{path} is gzip-compressed and cannot be followed; use mode='replay' for it."
            )
        self.path = path
        self.follow = follow
        self.chunk_bytes = chunk_bytes
        self._splitter = LineSplitter(max_line_bytes)
        self._raw: io.FileIO | None = None  # the file descriptor we hold (compressed or not)
        self._stream: io.BufferedIOBase | io.FileIO | None = None  # what lines are read from
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._read_offset = 0  # bytes read from the stream so far
        self._resume: tuple[int, int] | None = None  # (inode, offset) to apply on first attach
        self._rotated = False  # the path names a new file; switch once the old one is drained
        self._reached_end = False  # replay: the whole file has been read
        self._opened = False
        self._closed = False

    @property
    def inode(self) -> int | None:
        """Inode of the file being read, ``None`` while waiting for the path to appear."""
        return None if self._identity is None else self._identity[1]

    @property
    def consumed(self) -> int:
        """Offset just past the last line handed out (where reading started, before any)."""
        return self._splitter.consumed

    @property
    def exhausted(self) -> bool:
        """Replay mode read everything and handed every line out."""
        return self._reached_end and self._splitter.pending == 0

    @property
    def lag(self) -> int | None:
        """Bytes in the file(s) not yet handed out; ``None`` for compressed files."""
        if is_compressed(self.path):
            return None
        unread = 0
        if self._raw is not None:
            size = os.fstat(self._raw.fileno()).st_size
            unread = max(size - self._splitter.consumed, 0)
        try:
            current = os.stat(self.path)
        except OSError:
            return unread
        if (current.st_dev, current.st_ino) != self._identity:
            unread += current.st_size
        return unread

    def open(self, inode: int | None = None, offset: int = 0) -> None:
        """Start at the beginning of the file, or at ``offset`` if it is still file ``inode``.

        Raises
        ------
        SourceError
            In replay mode when the file does not exist or cannot be read.
        """
        if self._opened:
            raise RuntimeError(f"{self.path} is already open; create a new reader to reopen it.")
        if offset < 0:
            raise ValueError(f"offset must be non-negative, got {offset}.")
        self._opened = True
        self._resume = None if inode is None else (inode, offset)
        if not self._attach() and not self.follow:
            raise SourceError(
                f"{self.path} does not exist; replay mode needs an existing file "
                "(use mode='follow' to wait for it)."
            )
        if self._raw is None:
            logger.info("waiting for %s to appear", self.path)

    def read(self, max_lines: int) -> FileLines | None:
        """Up to ``max_lines`` complete lines, or ``None`` if none is available right now."""
        if not self._opened or self._closed:
            raise RuntimeError(f"reader for {self.path} is not open.")
        block = self._splitter.take(max_lines)
        if block is None:
            self._advance()
            block = self._splitter.take(max_lines)
        if block is None or self._identity is None:
            return None
        return FileLines(self._identity[1], block)

    def first_line(self) -> bytes:
        """The first line of the open file (a CSV header), read without moving the reader.

        Raises
        ------
        SourceError
            When the first line is longer than ``max_line_bytes`` or no file is open.
        """
        if self._raw is None:
            raise SourceError(f"{self.path} is not open, so its first line cannot be read.")
        limit = self._splitter.max_line_bytes
        if is_compressed(self.path):
            with gzip.open(self.path, "rb") as compressed:
                head = compressed.read(limit + 1)
        else:
            head = os.pread(self._raw.fileno(), limit + 1, 0)
        newline = head.find(b"\n")
        if newline < 0 and len(head) > limit:
            raise SourceError(
                f"the first line of {self.path} is longer than {limit} bytes; "
                "raise max_record_bytes or check that the file is the expected CSV."
            )
        return head if newline < 0 else head[:newline]

    def close(self) -> None:
        """Release the file descriptor."""
        self._closed = True
        self._detach()

    def _attach(self) -> bool:
        """Open the path and seek to the resume point; ``False`` if it does not exist."""
        try:
            raw = io.FileIO(self.path, "rb")
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise SourceError(
                f"cannot open {self.path}: {exc.strerror}; check the path and its permissions."
            ) from exc
        status = os.fstat(raw.fileno())
        self._raw = raw
        self._identity = (status.st_dev, status.st_ino)
        self._stream = gzip.GzipFile(fileobj=raw, mode="rb") if is_compressed(self.path) else raw
        self._read_offset = 0
        offset = self._resume_offset(status.st_ino, status.st_size)
        self._resume = None
        if offset:
            self._skip_to(offset)
        self._splitter.reset(self._read_offset)
        return True

    def _resume_offset(self, inode: int, size: int) -> int:
        if self._resume is None:
            return 0
        stored_inode, stored_offset = self._resume
        if stored_inode != inode:
            logger.info(
                "%s is a different file (inode %d) than the stored position's (inode %d); "
                "reading it from the start",
                self.path,
                inode,
                stored_inode,
            )
            return 0
        if not is_compressed(self.path) and stored_offset > size:
            logger.warning(
                "%s is shorter (%d bytes) than the stored position (%d); it was truncated, "
                "reading it from the start",
                self.path,
                size,
                stored_offset,
            )
            return 0
        return stored_offset

    def _skip_to(self, offset: int) -> None:
        assert self._stream is not None and self._raw is not None
        if not is_compressed(self.path):
            self._raw.seek(offset)
            self._read_offset = offset
            return
        while self._read_offset < offset:
            skipped = len(self._read_chunk(min(self.chunk_bytes, offset - self._read_offset)))
            if skipped == 0:
                logger.warning(
                    "%s decompresses to %d bytes, less than the stored position (%d); "
                    "treating it as fully read",
                    self.path,
                    self._read_offset,
                    offset,
                )
                return
            self._read_offset += skipped

    def _detach(self) -> None:
        if self._stream is not None and self._stream is not self._raw:
            self._stream.close()
        if self._raw is not None:
            self._raw.close()
        self._raw = None
        self._stream = None
        self._identity = None

    def _read_chunk(self, size: int) -> bytes:
        assert self._stream is not None
        try:
            return self._stream.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(
                f"{self.path} could not be read after {self._read_offset} bytes ({exc}); "
                "check the disk, or recompress or replace the file."
            ) from exc

    def _advance(self) -> None:
        """Read until at least one line is complete or nothing more is available now."""
        while self._splitter.pending == 0 and not self._reached_end:
            if self._rotated:
                self._rotated = False
                self._detach()
            if self._raw is None and not self._attach():
                return
            data = self._read_chunk(self.chunk_bytes)
            if data:
                self._read_offset += len(data)
                self._splitter.feed(data)
            elif not self.follow:
                self._splitter.finish()
                self._reached_end = True
            elif not self._notice_rotation_or_truncation():
                return

    def _notice_rotation_or_truncation(self) -> bool:
        """At the end of the file: react if the path moved on; ``True`` if there is more to do."""
        assert self._raw is not None
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None  # removed, maybe about to be recreated: keep the old file meanwhile
        if current is not None and (current.st_dev, current.st_ino) != self._identity:
            while data := self._read_chunk(self.chunk_bytes):  # written just before the rename
                self._read_offset += len(data)
                self._splitter.feed(data)
            self._splitter.finish()
            self._rotated = True
            logger.info("%s was rotated; the rest of the old file is read first", self.path)
            return True
        size = os.fstat(self._raw.fileno()).st_size
        if size < self._read_offset:
            logger.warning(
                "%s shrank to %d bytes below the %d already read; it was truncated, "
                "reading it again from the start",
                self.path,
                size,
                self._read_offset,
            )
            self._raw.seek(0)
            self._read_offset = 0
            self._splitter.reset(0)
            return True
        return False
