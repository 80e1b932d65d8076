"""Reading a file's lines once (replay) or for as long as it lives (follow, like ``tail -F``).

Follow mode has to survive what log shippers do to files, whether the agent is running or not:

* **rotation** (the path is renamed away, a new file created): the old file is read to its end,
  a last line without newline included, then any uncompressed generation rotated after it,
  oldest first, then the new file from its start. After a restart the file named by the
  stored position is looked for among the path's *siblings* (``live.csv.1``,
  ``live.csv-20261130``, or ``live.csv.1.gz`` if it was compressed meanwhile) by inode and
  fingerprint, and finished first; see `adapters._identity`. A later generation found only
  compressed is reported and counted, not read: its modification time, which orders the
  generations, is only as good as the compressor that set it;
* **a reused inode** (``rm`` and recreate while the agent is down): the stored position is
  resumed only if the file at the path has the stored inode *and* fingerprint and is at least
  as long as the stored offset; otherwise it is another file, read from its start;
* **truncation in place** (``copytruncate``): noticed when the file becomes shorter than what
  was read, or when its first bytes change under the reader (truncated and written past the
  read offset between two reads; checked after every read, so misplaced bytes are never
  handed out). The unread rest is taken from the copy if one is found among the siblings
  (plain or ``.gz``), and the file is then read again from offset 0 as a new generation;
* a path that does not exist yet: the reader waits for it.

Whatever could not be read is logged as a WARNING and counted by reason
(`adapters.base.SKIP_REASONS`, exported as ``metasentry_source_skipped_bytes_total``); nothing
is passed over silently. A count is of bytes the reader knows existed: when it cannot know how
many (a position stored before fingerprints, a damaged ``.gz`` of unknown length) it says so in
the WARNING and counts nothing.

What ``copytruncate`` can and cannot guarantee
-----------------------------------------------
``copytruncate`` copies the file, then truncates it, while the writer keeps appending through
its descriptor. What it *can* guarantee, with this reader: every byte that was in the file when
the copy was made is delivered, once. Whether the reader was keeping up, behind by a backlog,
or stopped, it finishes the old generation from the copy (``live.csv.1``, or ``live.csv.1.gz``
once compressed) from where it was, then reads the emptied file from its start as a new
generation whose keys cannot collide with the old ones.

What it *cannot* guarantee:

* bytes the writer appended between the end of the copy and the truncation existed only in the
  file that was just emptied; no reader can get them back. They are counted as ``truncated``
  as far as the reader saw them (the largest size it observed, checked at every batch, minus
  the copy's size): the count is a lower bound, and 0 when the reader did not look in that
  window;
* without a copy (deleted at once, compressed to a format other than gzip, or a plain
  ``truncate``) everything between the last line handed out and the truncation point is lost;
  it is counted the same way, as a lower bound;
* a truncation followed, before the reader looks again, by a rewrite to at least the old
  length *starting with the same bytes* cannot be told from an append: neither the new
  generation nor any loss is seen.

Prefer rename rotation (``create``), which loses nothing.

Other windows that remain, as in ``tail -F``: bytes a writer appends to a rotated file after
the reader finished it (before the writer reopened the path) are not read; a generation that
was rotated and deleted before the reader got to it is counted only if it was the one being
read (its size was stored with the position).

Offsets are byte positions in the file, or in the decompressed stream for ``.gz`` files, which
are read by decompressing and discarding up to the stored offset.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import zlib
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from adapters._identity import (
    FINGERPRINT_BYTES,
    Generation,
    Sibling,
    StoredPosition,
    decompressed_size,
    digest,
    find_generation,
    fingerprint_fd,
    head_of,
    is_compressed,
    looks_compressed,
    successors,
)
from adapters._lines import LineBlock, LineSplitter
from adapters.base import (
    SKIP_COMPRESSED,
    SKIP_REPLACED,
    SKIP_ROTATED_MISSING,
    SKIP_TRUNCATED,
    SKIP_UNREADABLE,
    SourceError,
)

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
"""Read size: big enough that syscalls do not dominate, small enough to bound memory."""

_REMEMBERED_GENERATIONS = 64
"""Generations kept for `FileTail.known_generation`: a window rarely spans more than a few."""

__all__ = ["CHUNK_BYTES", "FileLines", "FileTail", "is_compressed"]


@dataclass(frozen=True, slots=True)
class FileLines:
    """Lines read from one file generation.

    Attributes
    ----------
    generation:
        The file they come from; its id prefixes their offset keys.
    block:
        The lines.
    size:
        The file's size when last looked at (at least ``block.end``); ``None`` for ``.gz``.
    mtime_ns:
        The file's modification time when last looked at.
    """

    generation: Generation
    block: LineBlock
    size: int | None
    mtime_ns: int


@dataclass(slots=True)
class _OpenFile:
    """The file being read and what is known about it."""

    path: Path  # where it was opened; it may have been renamed since
    raw: io.FileIO
    stream: io.BufferedIOBase | io.FileIO
    identity: tuple[int, int]  # (st_dev, st_ino)
    rotated: bool  # a generation the path has moved past: read it to its end, then move on
    size: int  # largest size seen (on disk)
    mtime_ns: int
    content_end: int | None = None  # for a rotated file: how long its content is known to be

    @property
    def inode(self) -> int:
        return self.identity[1]

    @property
    def compressed(self) -> bool:
        return self.stream is not self.raw

    def look(self) -> os.stat_result:
        """Refresh size and modification time from the descriptor."""
        status = os.fstat(self.raw.fileno())
        self.size = max(self.size, status.st_size)
        self.mtime_ns = status.st_mtime_ns
        return status

    def close(self) -> None:
        if self.compressed:
            self.stream.close()
        self.raw.close()


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
        self._file: _OpenFile | None = None
        self._read_offset = 0  # bytes read from the stream so far
        # The first bytes of the open file as they were read (not as they are now: a file can
        # be truncated between a read and the moment its first line is handed out), kept
        # while the file is read from its start; its fingerprint is taken from them.
        self._head = b""
        self._head_from_start = False
        self._generation: Generation | None = None  # fixed once a line of the file is handed out
        self._epoch = 0  # of the open file, or of the next one while waiting
        self._finished: deque[tuple[str, int]] = deque(maxlen=16)  # fingerprints read to the end
        self._reported: set[int] = set()  # inodes of compressed generations warned about
        self._known: OrderedDict[str, tuple[Generation, int]] = OrderedDict()  # id: (it, mtime)
        self._skipped: Counter[str] = Counter()
        self._untaken: Counter[str] = Counter()
        self._switch = False  # the open file is finished; move to the next generation
        self._reached_end = False  # replay: the whole file has been read
        self._opened = False
        self._closed = False

    # --- what callers observe ------------------------------------------------------------

    @property
    def inode(self) -> int | None:
        """Inode of the file being read, ``None`` while waiting for the path to appear."""
        return None if self._file is None else self._file.inode

    @property
    def consumed(self) -> int:
        """Offset just past the last line handed out (where reading started, before any)."""
        return self._splitter.consumed

    @property
    def exhausted(self) -> bool:
        """Replay mode read everything and handed every line out."""
        return self._reached_end and self._splitter.pending == 0

    @property
    def skipped(self) -> Mapping[str, int]:
        """Bytes known to be lost since the reader was created, by reason."""
        return dict(self._skipped)

    def take_skipped(self) -> dict[str, int]:
        """Bytes lost since the previous call, by reason (for a counter metric)."""
        taken = dict(self._untaken)
        self._untaken.clear()
        return taken

    def known_generation(self, generation_id: str) -> tuple[Generation, int] | None:
        """A generation lines were recently handed out from, by its id, and its last mtime."""
        return self._known.get(generation_id)

    def can_resume(self, stored: StoredPosition) -> bool:
        """Whether `open` would resume the generation ``stored`` names at its offset.

        ``False`` when that file is gone, replaced or truncated: `open` would then count what
        is lost and start on the next generation instead.
        """
        live = self._stat_path()
        if live is not None and live.st_ino == stored.inode:
            if self._compare(self.path, live.st_size, stored) is None:
                return True
        return self.follow and find_generation(self.path, stored) is not None

    @property
    def lag(self) -> int | None:
        """Bytes in the file(s) not yet handed out; ``None`` for compressed files."""
        if is_compressed(self.path) or (self._file is not None and self._file.compressed):
            return None
        unread = 0
        identity = None
        if self._file is not None:
            self._observe()  # seen, so a later truncation can count it
            size = os.fstat(self._file.raw.fileno()).st_size
            unread = max(size - self._splitter.consumed, 0)
            identity = self._file.identity
        try:
            current = os.stat(self.path)
        except OSError:
            return unread
        if (current.st_dev, current.st_ino) != identity:
            unread += current.st_size
        return unread

    # --- lifecycle -------------------------------------------------------------------------

    def open(self, resume: StoredPosition | None = None) -> None:
        """Start at the beginning of the file, or where ``resume`` says, if that file exists.

        Raises
        ------
        SourceError
            In replay mode when the file does not exist or cannot be read.
        """
        if self._opened:
            raise RuntimeError(f"{self.path} is already open; create a new reader to reopen it.")
        self._opened = True
        if resume is None:
            attached = self._attach(self.path, rotated=False)
        else:
            attached = self._resume(resume)
        if not attached and not self.follow:
            raise SourceError(
                f"{self.path} does not exist; replay mode needs an existing file "
                "(use mode='follow' to wait for it)."
            )
        if self._file is None:
            logger.info("waiting for %s to appear", self.path)

    def read(self, max_lines: int) -> FileLines | None:
        """Up to ``max_lines`` complete lines, or ``None`` if none is available right now."""
        if not self._opened or self._closed:
            raise RuntimeError(f"reader for {self.path} is not open.")
        if self._splitter.pending < max_lines:
            self._advance(max_lines)
        block = self._splitter.take(max_lines)
        if block is None:
            return None
        file = self._file
        assert file is not None, "lines are only ever buffered from an open file"
        if self.follow and not file.compressed:
            self._observe()  # how far the writer got: what a truncation would take with it
        generation = self._fix_generation()
        size = None if file.compressed else max(file.size, block.end)
        self._remember(generation, file.mtime_ns)
        return FileLines(generation, block, size, file.mtime_ns)

    def first_line(self) -> bytes:
        """The first line of the open file (a CSV header), read without moving the reader.

        Raises
        ------
        SourceError
            When the first line is longer than ``max_line_bytes`` or no file is open.
        """
        if self._file is None:
            raise SourceError(f"{self.path} is not open, so its first line cannot be read.")
        limit = self._splitter.max_line_bytes
        if self._file.compressed:
            head = head_of(self._file.path, limit + 1) or b""
        else:
            head = os.pread(self._file.raw.fileno(), limit + 1, 0)
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

    # --- resuming ------------------------------------------------------------------------

    def _resume(self, stored: StoredPosition) -> bool:
        """Open the generation ``stored`` names, or account for it and open what came next."""
        self._epoch = stored.epoch
        live = self._stat_path()
        # In follow mode another file at the path means rotation; in replay, replacement.
        reason = SKIP_ROTATED_MISSING if self.follow or live is None else SKIP_REPLACED
        if live is not None and live.st_ino == stored.inode:
            changed = self._compare(self.path, live.st_size, stored)
            if changed is None:
                return self._attach(self.path, rotated=False, offset=stored.offset, stored=stored)
            reason = changed
        if self.follow:
            found = find_generation(self.path, stored)
            if found is not None:
                logger.info(
                    "%s was rotated while the agent was down; reading the rest of %s first",
                    self.path,
                    found.path.name,
                )
                attached = self._attach(
                    found.path, rotated=True, offset=stored.offset, stored=stored
                )
                if attached and self._file is not None:
                    self._file.content_end = stored.size
                return attached
        self._count_lost(reason, stored.unread_bytes() if stored.size is not None else None)
        self._epoch = stored.epoch + 1
        if self.follow and stored.mtime_ns is not None:
            # Not the stored inode: a file rotated later may have been given it again.
            exclude = set() if live is None else {live.st_ino}
            if self._attach_successor(stored.mtime_ns, exclude):
                return True
        return self._attach(self.path, rotated=False)

    def _compare(self, path: Path, size: int, stored: StoredPosition) -> str | None:
        """``None`` if ``path`` is still the generation ``stored`` names, else why not."""
        if stored.fingerprint is None or stored.fingerprint_bytes is None:
            logger.info(
                "the stored position for %s predates fingerprints; trusting inode %d and size",
                path,
                stored.inode,
            )
            return SKIP_TRUNCATED if not is_compressed(path) and size < stored.offset else None
        head = head_of(path, stored.fingerprint_bytes)
        length = stored.fingerprint_bytes
        if head is None or len(head) < length or digest(head) != stored.fingerprint:
            return SKIP_REPLACED
        if not is_compressed(path) and size < stored.offset:
            return SKIP_TRUNCATED
        return None

    def _count_lost(self, reason: str, lost: int | None, detail: str = "") -> None:
        """Log and count bytes that can no longer be read; ``None`` when the amount is unknown."""
        what = {
            SKIP_ROTATED_MISSING: "the file it was reading was rotated away and is gone",
            SKIP_TRUNCATED: "the file it was reading was truncated",
            SKIP_REPLACED: "another file replaced the one it was reading",
            SKIP_UNREADABLE: "a rotated file could not be read to its end",
            SKIP_COMPRESSED: "a file rotated after the one it was reading was compressed first",
        }[reason]
        if lost == 0:
            logger.info("%s: %s, after everything in it had been read", self.path, what)
            return
        amount = "an unknown number of" if lost is None else f"{lost}"
        logger.warning(
            "%s: %s; %s bytes were never read and are lost (counted as %r)%s",
            self.path,
            what,
            amount,
            reason,
            detail,
        )
        if lost:
            self._skipped[reason] += lost
            self._untaken[reason] += lost

    # --- opening and closing files ---------------------------------------------------------

    def _stat_path(self) -> os.stat_result | None:
        try:
            return os.stat(self.path)
        except FileNotFoundError:
            return None

    def _attach(
        self,
        path: Path,
        *,
        rotated: bool,
        offset: int = 0,
        stored: StoredPosition | None = None,
    ) -> bool:
        """Open ``path`` at ``offset``; ``False`` if it does not exist.

        ``stored`` names the generation being resumed, so that its lines keep their keys; a
        position without fingerprint leaves the generation to be fixed at the first line.
        """
        if not self._open_file(path, rotated=rotated):
            return False
        self._generation = None
        if offset:
            self._skip_to(offset)
        self._splitter.reset(self._read_offset)
        if stored is not None and stored.fingerprint is not None:
            assert self._file is not None and stored.fingerprint_bytes is not None
            self._generation = Generation(
                self._file.inode, stored.fingerprint, stored.fingerprint_bytes, stored.epoch
            )
        return True

    def _open_file(self, path: Path, *, rotated: bool) -> bool:
        """Open ``path`` at its start, without touching the lines buffered so far."""
        try:
            raw = io.FileIO(path, "rb")
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise SourceError(
                f"cannot open {path}: {exc.strerror}; check the path and its permissions."
            ) from exc
        status = os.fstat(raw.fileno())
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if is_compressed(path) else raw
        self._file = _OpenFile(
            path,
            raw,
            stream,
            (status.st_dev, status.st_ino),
            rotated,
            status.st_size,
            status.st_mtime_ns,
        )
        self._read_offset = 0
        self._head = b""
        self._head_from_start = True
        self._switch = False
        return True

    def _skip_to(self, offset: int) -> None:
        assert self._file is not None
        if not self._file.compressed:
            self._file.raw.seek(offset)
            self._read_offset = offset
            self._head_from_start = False
            return
        while self._read_offset < offset:
            skipped = len(self._read_chunk(min(self.chunk_bytes, offset - self._read_offset)))
            if skipped == 0:
                logger.warning(
                    "%s decompresses to %d bytes, less than the stored position (%d); "
                    "treating it as fully read",
                    self._file.path,
                    self._read_offset,
                    offset,
                )
                return
            self._read_offset += skipped

    def _detach(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None

    def _fingerprint(self) -> tuple[str, int]:
        """Fingerprint of the open file: of the bytes read from its start, if it was read so."""
        assert self._file is not None
        if self._head_from_start:
            return digest(self._head), len(self._head)
        return fingerprint_fd(self._file.raw.fileno(), self._file.look().st_size)

    def _fix_generation(self) -> Generation:
        """The open file's generation, fixing its fingerprint when its first line goes out."""
        if self._generation is None:
            fingerprint, length = self._fingerprint()
            assert self._file is not None
            self._generation = Generation(self._file.inode, fingerprint, length, self._epoch)
        return self._generation

    def _remember(self, generation: Generation, mtime_ns: int) -> None:
        """Keep recent generations, so `known_generation` can turn a key into a position."""
        self._known[generation.id] = (generation, mtime_ns)
        self._known.move_to_end(generation.id)
        while len(self._known) > _REMEMBERED_GENERATIONS:
            self._known.popitem(last=False)

    # --- reading -----------------------------------------------------------------------

    def _read_chunk(self, size: int) -> bytes:
        file = self._file
        assert file is not None
        try:
            # read1 on gzip: one decompressed piece per call, so what precedes a damaged spot
            # comes out before the error does instead of being dropped with it.
            stream = file.stream
            data = stream.read1(size) if isinstance(stream, gzip.GzipFile) else stream.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            if not file.rotated:
                raise SourceError(
                    f"{file.path} could not be read after {self._read_offset} bytes ({exc}); "
                    "check the disk, or recompress or replace the file."
                ) from exc
            # A follower must not stop for a damaged rotated file: the live one still matters.
            logger.warning(
                "%s could not be read after %d bytes: %s", file.path, self._read_offset, exc
            )
            end = file.content_end if file.compressed else max(file.size, file.content_end or 0)
            unread = None if end is None else max(end - self._read_offset, 0) or None
            self._count_lost(SKIP_UNREADABLE, unread)
            return b""
        if self._head_from_start and self._read_offset < FINGERPRINT_BYTES:
            self._head += data[: FINGERPRINT_BYTES - self._read_offset]
        return data

    def _advance(self, want: int = 1) -> None:
        """Read until at least one line is complete or nothing more is available now.

        A compressed file is read on until ``want`` lines are waiting: its reads come in small
        decompressed pieces (a few hundred lines), and a batch that small costs the pipeline a
        commit and a pass over every column for little. Topping up stops at the end of what is
        there and at a rotation, whose handling waits until every line read is handed out.
        """
        while not self._reached_end:
            pending = self._splitter.pending
            if pending and (pending >= want or self._switch or self._file is None
                            or not self._file.compressed):
                return
            if self._switch:
                self._move_on()
            if self._file is None and not self._attach(self.path, rotated=False):
                return
            assert self._file is not None
            data = self._read_chunk(self.chunk_bytes)
            if not data and pending and self.follow and not self._file.rotated:
                return  # a live file's end (rotation, truncation) waits for these lines
            if data:
                if self.follow and not self._file.rotated and not self._observe():
                    self._on_truncation("its first bytes changed under the reader")
                    continue
                self._read_offset += len(data)
                self._splitter.feed(data)
            elif not self.follow:
                self._splitter.finish()
                self._reached_end = True
            elif self._file.rotated:
                self._splitter.finish()
                self._file.look()
                self._switch = True
            elif not self._notice_rotation_or_truncation():
                return

    def _observe(self) -> bool:
        """Note the open file's size and mtime, unless it stopped being the generation read.

        The size is taken before the first bytes are compared, so a size noted belongs to the
        generation being read even if the file is truncated and refilled meanwhile: it is what
        a truncation is later counted against.
        """
        file = self._file
        assert file is not None
        status = os.fstat(file.raw.fileno())
        if self.follow and self._rewritten():
            return False
        file.size = max(file.size, status.st_size)
        file.mtime_ns = status.st_mtime_ns
        return True

    def _rewritten(self) -> bool:
        """Whether the open file's first bytes are no longer those of its generation.

        Checked after each read in follow mode (the bytes just read included), so a file
        truncated and written past the read offset between two reads is not taken for one that
        grew, and the misplaced bytes are not handed out.
        """
        file = self._file
        if file is None or file.compressed:
            return False
        if self._head_from_start:
            return os.pread(file.raw.fileno(), len(self._head), 0) != self._head
        generation = self._generation
        if generation is None:
            return False
        head = os.pread(file.raw.fileno(), generation.fingerprint_bytes, 0)
        return len(head) < generation.fingerprint_bytes or digest(head) != generation.fingerprint

    def _notice_rotation_or_truncation(self) -> bool:
        """At the end of the file: react if the path moved on; ``True`` if there is more to do."""
        assert self._file is not None
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None  # removed, maybe about to be recreated: keep the old file meanwhile
        if current is not None and (current.st_dev, current.st_ino) != self._file.identity:
            while data := self._read_chunk(self.chunk_bytes):  # written just before the rename
                self._read_offset += len(data)
                self._splitter.feed(data)
            self._splitter.finish()
            self._file.look()
            self._switch = True
            logger.info("%s was rotated; the rest of the old file is read first", self.path)
            return True
        if self._file.look().st_size < self._read_offset:
            self._on_truncation(f"it shrank below the {self._read_offset} bytes already read")
            return True
        return False

    def _on_truncation(self, how: str) -> None:
        """The open file was truncated in place: finish its generation from a copy if one exists.

        Lines already complete were handed out (reading happens only when none is pending), so
        what is at stake is the partial line in the splitter and whatever was never read.
        """
        file = self._file
        assert file is not None
        seen_end = max(file.size, self._read_offset)
        copy = self._find_copy()
        if copy is None:
            logger.info("%s was truncated (%s); reading it again from the start", self.path, how)
            self._count_lost(SKIP_TRUNCATED, seen_end - self._splitter.consumed)
            self._finish_generation()
            self._epoch += 1
            file.raw.seek(0)
            file.size = 0
            self._read_offset = 0
            self._head = b""
            self._head_from_start = True
            self._generation = None
            self._splitter.reset(0)
            return
        copy_end = decompressed_size(copy.path) if copy.compressed else copy.size
        logger.info(
            "%s was truncated (%s); reading the %d bytes not yet read from its copy %s",
            self.path,
            how,
            max((copy_end or 0) - self._read_offset, 0),
            copy.path.name,
        )
        self._count_lost(SKIP_TRUNCATED, max(seen_end - (copy_end or seen_end), 0))
        self._switch_to_copy(copy, seen_end)

    def _find_copy(self) -> Sibling | None:
        """A sibling holding the current generation beyond what was read (``copytruncate``)."""
        generation = self._generation
        if generation is None:
            return None
        wanted = StoredPosition(
            inode=-1,  # the copy has its own inode; only the content counts
            offset=self._read_offset,
            fingerprint=generation.fingerprint,
            fingerprint_bytes=generation.fingerprint_bytes,
        )
        copy = find_generation(self.path, wanted)
        if copy is None or (not copy.compressed and copy.size <= self._read_offset):
            return None
        return copy

    def _switch_to_copy(self, copy: Sibling, seen_end: int) -> None:
        """Go on reading at the same offset in ``copy``, keeping the partial line."""
        generation = self._generation
        assert generation is not None
        read_offset = self._read_offset
        self._detach()
        if not self._open_file(copy.path, rotated=True):  # gone again in the meantime
            self._count_lost(SKIP_ROTATED_MISSING, None)
            self._epoch += 1
            self._generation = None
            self._splitter.reset(0)
            return
        assert self._file is not None
        self._file.content_end = seen_end
        self._skip_to(read_offset)
        self._generation = Generation(
            self._file.inode, generation.fingerprint, generation.fingerprint_bytes, generation.epoch
        )

    def _finish_generation(self) -> None:
        """Remember the finished generation's content, so a compressed twin is not read again."""
        if self._generation is not None:
            self._finished.append(
                (self._generation.fingerprint, self._generation.fingerprint_bytes)
            )

    def _move_on(self) -> None:
        """The open file is finished: open the next generation (rotated later, or the path)."""
        file = self._file
        assert file is not None
        self._finish_generation()
        after_ns = file.mtime_ns
        exclude = {file.inode}
        self._detach()
        self._switch = False
        self._epoch += 1
        self._generation = None
        live = self._stat_path()
        if live is not None:
            exclude.add(live.st_ino)
        if not self._attach_successor(after_ns, exclude):
            self._attach(self.path, rotated=False)

    def _attach_successor(self, after_ns: int, exclude: set[int]) -> bool:
        """Open the oldest generation rotated after the one last read, if any is left.

        A compressed one is reported, not read: its modification time is only trustworthy if
        the compressor kept the original's, and trusting a fresh one would read an old
        generation a second time.
        """
        for sibling in successors(self.path, after_ns, exclude):
            if self._already_read(sibling):
                continue
            if looks_compressed(sibling.path):
                self._report_compressed(sibling)
                continue
            logger.info(
                "%s: reading %s, rotated after the file read before it",
                self.path,
                sibling.path.name,
            )
            if self._attach(sibling.path, rotated=True):
                return True
        return False

    def _report_compressed(self, sibling: Sibling) -> None:
        if sibling.inode in self._reported:
            return
        self._reported.add(sibling.inode)
        size = decompressed_size(sibling.path) if sibling.compressed else None
        detail = (
            f"; the file is {sibling.path.name}, unless its compressor did not keep its "
            "modification time, in which case it is an older generation, already read"
        )
        self._count_lost(SKIP_COMPRESSED, size, detail)

    def _already_read(self, sibling: Sibling) -> bool:
        """Whether ``sibling`` holds a generation finished here (its ``.gz`` being written)."""
        for fingerprint, length in self._finished:
            head = head_of(sibling.path, length)
            if head is not None and len(head) == length and digest(head) == fingerprint:
                return True
        return False
