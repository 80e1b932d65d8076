"""An in-memory source for tests of the pipeline: same parsing, positions and acks, no I/O.

Each item of ``lines`` is one line (no newline needed). Offsets are ``"memory:<n>"`` with ``n``
the 1-based line number, and positions are ``{"line": <index of the next line>}``, so resuming
works exactly as for files. With ``follow=True`` the source never reports exhaustion and
`MemorySource.append` adds lines while it runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from adapters._lines import EXCERPT_BYTES, LineBlock, line_number_keys
from adapters.base import Batch, RecordFormat, SourceError, check_fetch
from adapters.parsing import CsvParser, make_parser


class MemorySource:
    """Records from a list of lines.

    Parameters
    ----------
    name:
        Name of the source.
    lines:
        The lines, as text or bytes.
    format, columns, header, delimiter, max_record_bytes:
        As for `adapters.stdin.StdinSource`.
    follow:
        Keep waiting for `append` instead of reporting the end of ``lines``.

    Examples
    --------
    >>> source = MemorySource("mem", ['{"a": 1}', '{"a": 2}', '{"a": 3}'])
    >>> source.open(None)
    >>> first = source.fetch(max_records=2, timeout_s=0)
    >>> [r.fields["a"] for r in first.records], first.position
    ([1, 2], {'line': 2})
    >>> restarted = MemorySource("mem", ['{"a": 1}', '{"a": 2}', '{"a": 3}'])
    >>> restarted.open(first.position)
    >>> [r.offset_key for r in restarted.fetch(10, 0).records]
    ['memory:3']
    """

    def __init__(
        self,
        name: str,
        lines: Sequence[str | bytes],
        *,
        format: RecordFormat = "jsonl",
        columns: Sequence[str] | None = None,
        header: bool = True,
        delimiter: str = ",",
        max_record_bytes: int = 1_048_576,
        follow: bool = False,
    ) -> None:
        if not name:
            raise ValueError("name must be a non-empty string.")
        if max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be at least 1, got {max_record_bytes}.")
        self.name = name
        self.format = format
        self.max_record_bytes = max_record_bytes
        self.follow = follow
        self._parser = make_parser(
            format,
            columns=columns,
            header=header,
            delimiter=delimiter,
            max_record_bytes=max_record_bytes,
        )
        self._lines: list[bytes] = []
        self._next = 0
        self._committed: dict[str, Any] | None = None
        self._opened = False
        self._closed = False
        self.append(lines)

    @property
    def lag(self) -> int:
        """Lines not yet fetched."""
        return len(self._lines) - self._next

    @property
    def committed_position(self) -> dict[str, Any] | None:
        """Position of the last acknowledged batch."""
        return None if self._committed is None else dict(self._committed)

    def append(self, lines: Sequence[str | bytes]) -> None:
        """Add lines at the end, as a writer appending to a followed file would."""
        self._lines.extend(line.encode() if isinstance(line, str) else line for line in lines)

    def open(self, position: Mapping[str, Any] | None) -> None:
        """Start at the first line, or at ``position["line"]``."""
        if position is not None:
            line = position.get("line")
            if type(line) is not int or line < 0:
                raise SourceError(
                    f"source {self.name!r}: stored position {dict(position)!r} is not "
                    "{'line': <int>}; delete it to start over."
                )
            self._next = min(line, len(self._lines))
            if isinstance(self._parser, CsvParser) and self._parser.header and self._next > 0:
                self._parser.load_header(self._lines[0])
        self._opened = True

    def fetch(self, max_records: int, timeout_s: float) -> Batch:
        """Up to ``max_records`` records; never waits, since nothing can arrive meanwhile."""
        check_fetch(self.name, max_records, timeout_s, readable=self._opened and not self._closed)
        textual = self._parser.textual
        while self._next < len(self._lines):
            block = self._take(max_records)
            records = self._parser.parse_block(block, line_number_keys("memory", block))
            if records:
                return Batch(self.name, records, {"line": block.end}, textual)
        position = {"line": self._next} if self._next else None
        return Batch(self.name, (), position, textual, exhausted=not self.follow)

    def ack(self, batch: Batch) -> None:
        """Remember ``batch.position`` as committed."""
        if batch.source != self.name:
            raise ValueError(f"batch from source {batch.source!r} acknowledged to {self.name!r}.")
        if batch.position is not None:
            self._committed = dict(batch.position)

    def close(self) -> None:
        """Stop the source."""
        self._closed = True

    def _take(self, max_lines: int) -> LineBlock:
        first = self._next
        stop = min(first + max_lines, len(self._lines))
        lines = self._lines[first:stop]
        limit = self.max_record_bytes
        oversize = {i: len(line) for i, line in enumerate(lines) if len(line) > limit}
        for index in oversize:
            lines[index] = lines[index][:EXCERPT_BYTES]
        self._next = stop
        return LineBlock(list(range(first, stop)), lines, oversize, first + 1, stop)
