"""Turning a byte stream into lines, with bounded memory whatever the input looks like.

Every line-oriented source (files, stdin, the in-memory double) feeds raw chunks into a
`LineSplitter` and takes `LineBlock`s out of it. Splitting happens once per chunk with
``bytes.split`` so that the per-line cost stays in C. A line longer than ``max_line_bytes`` is
never accumulated: only an excerpt is kept and the rest is discarded until its newline arrives,
so one runaway writer cannot exhaust the daemon's memory.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate

EXCERPT_BYTES = 1024
"""How much of an oversize line is kept, so an analyst can still see what it was."""


@dataclass(frozen=True, slots=True)
class LineBlock:
    """Consecutive complete lines of one stream.

    Attributes
    ----------
    starts:
        Stream offset of the first byte of each line; ``starts[0] == 0`` means the block opens
        the stream (where a CSV header lives).
    lines:
        Each line without its ``\\n``; an oversize line holds only its first `EXCERPT_BYTES`.
    oversize:
        ``{index in lines: full length in bytes}`` for the lines that were cut.
    first_number:
        1-based line number of ``lines[0]``, counted from where the splitter started.
    end:
        Stream offset just past the last line and its newline: where to resume after this block.
    """

    starts: list[int]
    lines: list[bytes]
    oversize: dict[int, int]
    first_number: int
    end: int


def line_number_keys(prefix: str, block: LineBlock) -> list[str]:
    """``"<prefix>:<line number>"`` for every line of ``block``."""
    first = block.first_number
    return [f"{prefix}:{number}" for number in range(first, first + len(block.lines))]


class LineSplitter:
    """Accumulates chunks of a stream and releases them as complete lines.

    Parameters
    ----------
    max_line_bytes:
        Lines longer than this (newline excluded) are cut to an excerpt and flagged oversize.
    offset:
        Stream offset of the first byte that will be fed, so line starts are absolute.
    """

    def __init__(self, max_line_bytes: int, offset: int = 0) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be at least 1, got {max_line_bytes}.")
        if offset < 0:
            raise ValueError(f"offset must be non-negative, got {offset}.")
        self.max_line_bytes = max_line_bytes
        self.reset(offset)

    def reset(self, offset: int) -> None:
        """Forget everything buffered and continue as if the stream began at ``offset``."""
        self._tail = b""  # an unfinished line
        self._tail_start = offset  # stream offset of the unfinished (or skipped) line
        self._skipping = False  # discarding the rest of an oversize line
        self._skipped = 0  # bytes of that oversize line seen so far
        self._excerpt = b""
        self._starts: list[int] = []
        self._lines: list[bytes] = []
        self._oversize: dict[int, int] = {}  # stream start -> full length
        self._cursor = 0  # lines before it have been handed out
        self._next_number = 1
        self._consumed = offset

    @property
    def pending(self) -> int:
        """Complete lines waiting to be taken."""
        return len(self._lines) - self._cursor

    @property
    def consumed(self) -> int:
        """Stream offset just past the last line handed out by `take`."""
        return self._consumed

    @property
    def has_partial_line(self) -> bool:
        """Whether bytes of a line without its newline yet are held back."""
        return self._skipping or bool(self._tail)

    def feed(self, data: bytes) -> None:
        """Add the next chunk of the stream."""
        if not data:
            return
        if self._skipping:
            newline = data.find(b"\n")
            if len(self._excerpt) < EXCERPT_BYTES:
                wanted = EXCERPT_BYTES - len(self._excerpt)
                self._excerpt += data[: min(wanted, len(data) if newline < 0 else newline)]
            if newline < 0:
                self._skipped += len(data)
                return
            self._queue_oversize(self._skipped + newline)
            data = data[newline + 1 :]
        buffer = self._tail + data if self._tail else data
        parts = buffer.split(b"\n")
        tail = parts.pop()
        if parts:
            lengths = list(map(len, parts))
            bounds = list(accumulate(map((1).__add__, lengths), initial=self._tail_start))
            self._tail_start = bounds.pop()
            if max(lengths) > self.max_line_bytes:
                self._cut_oversize(parts, lengths, bounds)
            self._compact()
            self._starts.extend(bounds)
            self._lines.extend(parts)
        if len(tail) > self.max_line_bytes:
            self._skipping = True
            self._skipped = len(tail)
            self._excerpt = tail[:EXCERPT_BYTES]
            self._tail = b""
        else:
            self._tail = tail

    def finish(self) -> None:
        """The stream ended: a last line without a newline is still a line."""
        if self._skipping:
            self._queue_oversize(self._skipped)
            self._tail_start -= 1  # there was no newline after it
        elif self._tail:
            self._compact()
            self._starts.append(self._tail_start)
            self._lines.append(self._tail)
            self._tail_start += len(self._tail)
            self._tail = b""

    def take(self, max_lines: int) -> LineBlock | None:
        """Hand out up to ``max_lines`` queued lines, or ``None`` when none is complete."""
        available = self.pending
        if available == 0:
            return None
        count = min(max_lines, available)
        first = self._cursor
        stop = first + count
        starts = self._starts[first:stop]
        lines = self._lines[first:stop]
        end = self._starts[stop] if stop < len(self._starts) else self._tail_start
        oversize: dict[int, int] = {}
        if self._oversize:
            for start in [s for s in self._oversize if starts[0] <= s <= starts[-1]]:
                oversize[bisect_left(starts, start)] = self._oversize.pop(start)
        self._cursor = stop
        number = self._next_number
        self._next_number += count
        self._consumed = end
        return LineBlock(starts, lines, oversize, number, end)

    def _queue_oversize(self, full_length: int) -> None:
        self._compact()
        self._starts.append(self._tail_start)
        self._lines.append(self._excerpt)
        self._oversize[self._tail_start] = full_length
        self._tail_start += full_length + 1
        self._skipping = False
        self._skipped = 0
        self._excerpt = b""
        self._tail = b""

    def _cut_oversize(self, parts: list[bytes], lengths: list[int], bounds: list[int]) -> None:
        limit = self.max_line_bytes
        for index, length in enumerate(lengths):
            if length > limit:
                self._oversize[bounds[index]] = length
                parts[index] = parts[index][:EXCERPT_BYTES]

    def _compact(self) -> None:
        """Drop lines already handed out, so the queue does not grow without bound."""
        if self._cursor:
            del self._starts[: self._cursor]
            del self._lines[: self._cursor]
            self._cursor = 0
