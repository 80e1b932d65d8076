"""Record sources reading JSON Lines or CSV files, in replay or follow mode.

Both share `FileTail` for reading and differ only in how lines become records. Offsets are
``"<inode>:<byte offset of the line start>"`` and a batch's position is
``{"path": ..., "inode": ..., "offset": <byte offset after the batch's last line>}``, so a
restarted daemon resumes exactly after the last committed batch as long as the file is the same
inode; if it is not (the file was rotated while the daemon was down), the current file is read
from its start. The first `open` without a position also reads from the start of the file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from adapters._lines import LineBlock
from adapters._tail import FileTail
from adapters.base import Batch, SourceError
from adapters.parsing import CsvParser, JsonlParser, RecordParser

logger = logging.getLogger(__name__)

FileMode = Literal["follow", "replay"]
_MODES: tuple[FileMode, ...] = ("follow", "replay")


def file_offset_keys(inode: int, block: LineBlock) -> list[str]:
    """``"<inode>:<start>"`` for every line of ``block``."""
    prefix = f"{inode}:"
    return [prefix + str(start) for start in block.starts]


class _FileSource:
    """Fetch loop, positions and acknowledgement shared by the file sources."""

    def __init__(
        self,
        name: str,
        path: str | Path,
        *,
        mode: FileMode,
        max_record_bytes: int,
        poll_interval_s: float,
        parser: RecordParser,
    ) -> None:
        if not name:
            raise ValueError("name must be a non-empty string.")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}.")
        if max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be at least 1, got {max_record_bytes}.")
        if not poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be positive, got {poll_interval_s}.")
        self.name = name
        self.path = Path(path)
        self.mode = mode
        self.max_record_bytes = max_record_bytes
        self.poll_interval_s = poll_interval_s
        self._parser = parser
        self._tail = FileTail(self.path, follow=mode == "follow", max_line_bytes=max_record_bytes)
        self._position: dict[str, Any] | None = None
        self._committed: dict[str, Any] | None = None
        self._opened = False

    @property
    def lag(self) -> int | None:
        """Bytes in the file not yet fetched; ``None`` for gzip files."""
        return self._tail.lag if self._opened else None

    @property
    def committed_position(self) -> dict[str, Any] | None:
        """Position of the last acknowledged batch."""
        return None if self._committed is None else dict(self._committed)

    def open(self, position: Mapping[str, Any] | None) -> None:
        """Read from the start of the file, or resume after ``position``.

        Raises
        ------
        SourceError
            When ``position`` is malformed, or in replay mode when the file does not exist.
        """
        if self._opened:
            raise RuntimeError(f"source {self.name!r} is already open.")
        inode, offset = self._parse_position(position)
        if inode is not None and position is not None and position.get("path") != str(self.path):
            logger.info(
                "source %r: stored position was for %s, now reading %s; resuming only if it is "
                "the same file",
                self.name,
                position.get("path"),
                self.path,
            )
        self._tail.open(inode, offset)
        self._opened = True
        if self._tail.inode is not None and self._tail.consumed > 0:
            self._position = {
                "path": str(self.path),
                "inode": self._tail.inode,
                "offset": self._tail.consumed,
            }
            self._resumed_mid_file(self._tail)

    def _resumed_mid_file(self, tail: FileTail) -> None:
        """Hook for what a resumed source needs from the part of the file it skips."""

    def fetch(self, max_records: int, timeout_s: float) -> Batch:
        """Up to ``max_records`` records, waiting up to ``timeout_s`` for the first one."""
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records}.")
        if timeout_s < 0:
            raise ValueError(f"timeout_s must be non-negative, got {timeout_s}.")
        if not self._opened:
            raise RuntimeError(f"source {self.name!r} is not open; call open() first.")
        deadline = time.monotonic() + timeout_s
        textual = self._parser.textual
        while True:
            lines = self._tail.read(max_records)
            if lines is not None:
                block = lines.block
                records = self._parser.parse(block, file_offset_keys(lines.inode, block))
                self._position = {"path": str(self.path), "inode": lines.inode, "offset": block.end}
                if records:
                    return Batch(self.name, tuple(records), dict(self._position), textual)
                continue
            if self._tail.exhausted:
                return Batch(self.name, (), self._position_copy(), textual, exhausted=True)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Batch(self.name, (), self._position_copy(), textual)
            time.sleep(min(self.poll_interval_s, remaining))

    def ack(self, batch: Batch) -> None:
        """Remember ``batch.position`` as committed."""
        if batch.source != self.name:
            raise ValueError(f"batch from source {batch.source!r} acknowledged to {self.name!r}.")
        if batch.position is not None:
            self._committed = dict(batch.position)

    def close(self) -> None:
        """Release the file."""
        self._tail.close()

    def position_at(self, offset_key: str) -> dict[str, Any] | None:
        """The position from which `open` reads the record ``offset_key`` next.

        The pipeline stores it to rebuild windowed detector state after a restart: it rewinds
        to the oldest record still in a window, not just to the last commit.
        """
        inode, _, offset = offset_key.partition(":")
        if not (inode.isdigit() and offset.isdigit()):
            return None
        return {"path": str(self.path), "inode": int(inode), "offset": int(offset)}

    def _position_copy(self) -> dict[str, Any] | None:
        return None if self._position is None else dict(self._position)

    def _parse_position(self, position: Mapping[str, Any] | None) -> tuple[int | None, int]:
        if position is None:
            return None, 0
        inode = position.get("inode")
        offset = position.get("offset")
        if not (isinstance(inode, int) and isinstance(offset, int) and inode >= 0 and offset >= 0):
            raise SourceError(
                f"source {self.name!r}: stored position {dict(position)!r} is not a file "
                "position ({'path', 'inode', 'offset'}); delete it to read the file from the start."
            )
        return inode, offset


class JsonlFileSource(_FileSource):
    """A file of JSON objects, one per line (JSON Lines).

    Parameters
    ----------
    name:
        Name of the source, as in ``agent.yaml``.
    path:
        The file; ``.gz`` files are decompressed on the fly (replay mode only).
    mode:
        ``"follow"`` keeps reading appended lines across rotation and truncation, like
        ``tail -F``; ``"replay"`` reads the file once and then reports the batch as exhausted.
    max_record_bytes:
        Longer lines become ``"oversize"`` error records holding an excerpt.
    poll_interval_s:
        How often follow mode looks for new data while waiting.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "events.jsonl"
    >>> _ = path.write_text('{"bytes": 491}\\n[1, 2]\\n')
    >>> source = JsonlFileSource("events", path, mode="replay")
    >>> source.open(None)
    >>> batch = source.fetch(max_records=10, timeout_s=0.1)
    >>> [(r.fields, r.error) for r in batch.records]
    [({'bytes': 491}, None), (None, 'not_object')]
    >>> batch.position["offset"], source.fetch(10, 0.1).exhausted
    (22, True)
    >>> source.close()
    """

    def __init__(
        self,
        name: str,
        path: str | Path,
        *,
        mode: FileMode = "follow",
        max_record_bytes: int = 1_048_576,
        poll_interval_s: float = 0.2,
    ) -> None:
        super().__init__(
            name,
            path,
            mode=mode,
            max_record_bytes=max_record_bytes,
            poll_interval_s=poll_interval_s,
            parser=JsonlParser(max_record_bytes),
        )


class CsvFileSource(_FileSource):
    """A CSV file, one record per line; field values stay text for the encoder to parse.

    Parameters
    ----------
    name, path, mode, max_record_bytes, poll_interval_s:
        As for `JsonlFileSource`.
    columns:
        Cell names for files without a header (NSL-KDD); with ``header=True`` they replace
        the header's names.
    header:
        Whether the first line of the file is a header rather than a record.
    delimiter:
        The cell separator.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "flows.csv"
    >>> _ = path.write_text('0,tcp,"a,b"\\n1,udp\\n')
    >>> source = CsvFileSource("flows", path, mode="replay", header=False,
    ...                        columns=["duration", "protocol", "note"])
    >>> source.open(None)
    >>> [(r.fields, r.error) for r in source.fetch(10, 0.1).records]
    [({'duration': '0', 'protocol': 'tcp', 'note': 'a,b'}, None), (None, 'csv_columns')]
    >>> source.close()
    """

    def __init__(
        self,
        name: str,
        path: str | Path,
        *,
        mode: FileMode = "follow",
        columns: Sequence[str] | None = None,
        header: bool = True,
        delimiter: str = ",",
        max_record_bytes: int = 1_048_576,
        poll_interval_s: float = 0.2,
    ) -> None:
        self._csv = CsvParser(
            columns=columns, header=header, delimiter=delimiter, max_record_bytes=max_record_bytes
        )
        super().__init__(
            name,
            path,
            mode=mode,
            max_record_bytes=max_record_bytes,
            poll_interval_s=poll_interval_s,
            parser=self._csv,
        )

    @property
    def columns(self) -> list[str] | None:
        """Names of the cells; ``None`` until the header has been read."""
        return self._csv.columns

    def _resumed_mid_file(self, tail: FileTail) -> None:
        if self._csv.header:
            self._csv.load_header(tail.first_line())
