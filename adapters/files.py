"""Record sources reading JSON Lines or CSV files, in replay or follow mode.

Both share `FileTail` for reading and differ only in how lines become records. Offset keys
are ``"<generation>:<byte offset of the line start>"``, the generation being
``"<inode>-<fingerprint prefix>-<epoch>"`` (see `adapters._identity`): the same line of the
same file gets the same key after a restart, and a line at the same offset of a later file
(a reused inode, a truncated and rewritten file) gets another, so the store neither doubles the
one nor drops the other as a duplicate.

A batch's position is ``{"path", "inode", "offset", "fingerprint", "fingerprint_bytes",
"epoch", "size", "mtime_ns"}``, ``offset`` being the byte offset after the batch's last line.
A restarted daemon resumes exactly after the last committed batch if the file it names is
still at the path; if the file was rotated while the daemon was down, it finishes the rotated
file (found among the path's siblings) and the files rotated after it before reading the new
one from its start; whatever can no longer be read is counted (`take_skipped`) and logged.
A position written before fingerprints existed (``{"path", "inode", "offset"}``) still
resumes, trusting inode and size. The first `open` without a position reads from the start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from adapters._identity import StoredPosition
from adapters._lines import LineBlock
from adapters._tail import FileLines, FileTail
from adapters.base import Batch, SourceError, check_fetch
from adapters.parsing import CsvParser, JsonlParser, RecordParser

logger = logging.getLogger(__name__)

FileMode = Literal["follow", "replay"]
_MODES: tuple[FileMode, ...] = ("follow", "replay")


def file_offset_keys(generation_id: str, block: LineBlock) -> list[str]:
    """``"<generation id>:<start>"`` for every line of ``block``."""
    prefix = f"{generation_id}:"
    return [prefix + str(start) for start in block.starts]


def file_position(path: Path, lines: FileLines) -> dict[str, Any]:
    """The JSON position from which `open` reads the line after ``lines`` next."""
    generation = lines.generation
    position: dict[str, Any] = {
        "path": str(path),
        "inode": generation.inode,
        "offset": lines.block.end,
        "fingerprint": generation.fingerprint,
        "fingerprint_bytes": generation.fingerprint_bytes,
        "epoch": generation.epoch,
        "mtime_ns": lines.mtime_ns,
    }
    if lines.size is not None:
        position["size"] = lines.size
    return position


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
    def skipped(self) -> Mapping[str, int]:
        """Bytes this source knows it could not read, by reason (`adapters.base.SKIP_REASONS`).

        Cumulative since the source was created: a rotated file deleted before its end was
        read, a file truncated before its end was read, another file in its place.
        """
        return self._tail.skipped

    def take_skipped(self) -> dict[str, int]:
        """Bytes skipped since the previous call, by reason; the pipeline adds them to a counter."""
        return self._tail.take_skipped()

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
        stored = self._parse_position(position)
        if stored is not None and position is not None and position.get("path") != str(self.path):
            logger.info(
                "source %r: stored position was for %s, now reading %s; resuming only if it is "
                "the same file",
                self.name,
                position.get("path"),
                self.path,
            )
        self._tail.open(stored)
        self._opened = True
        if self._tail.inode is not None and self._tail.consumed > 0:
            assert position is not None
            self._position = dict(position)
            self._resumed_mid_file(self._tail)

    def _resumed_mid_file(self, tail: FileTail) -> None:
        """Hook for what a resumed source needs from the part of the file it skips."""

    def fetch(self, max_records: int, timeout_s: float) -> Batch:
        """Up to ``max_records`` records, waiting up to ``timeout_s`` for the first one."""
        check_fetch(self.name, max_records, timeout_s, readable=self._opened)
        deadline = time.monotonic() + timeout_s
        textual = self._parser.textual
        while True:
            lines = self._tail.read(max_records)
            if lines is not None:
                block = lines.block
                keys = file_offset_keys(lines.generation.id, block)
                records = self._parser.parse_block(block, keys)
                self._position = file_position(self.path, lines)
                if records:
                    return Batch(self.name, records, dict(self._position), textual)
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
        to the oldest record still in a window, not just to the last commit. ``None`` for a key
        of a generation this source no longer remembers.
        """
        generation_id, _, offset = offset_key.rpartition(":")
        known = self._tail.known_generation(generation_id)
        if known is None or not offset.isdigit():
            return None
        generation, mtime_ns = known
        # No "size": the bytes after this offset were committed already; should the file be
        # gone at the restart, they must not be counted as lost.
        return {
            "path": str(self.path),
            "inode": generation.inode,
            "offset": int(offset),
            "fingerprint": generation.fingerprint,
            "fingerprint_bytes": generation.fingerprint_bytes,
            "epoch": generation.epoch,
            "mtime_ns": mtime_ns,
        }

    def can_resume(self, position: Mapping[str, Any]) -> bool:
        """Whether `open` would resume exactly at ``position`` (its file is still readable).

        A caller holding two positions (the pipeline's window rewind and its last commit) opens
        the older one only if this is ``True``: otherwise the records it expects to re-read
        before the commit are no longer there.

        Raises
        ------
        SourceError
            When ``position`` is malformed.
        """
        stored = self._parse_position(position)
        assert stored is not None
        return self._tail.can_resume(stored)

    def _position_copy(self) -> dict[str, Any] | None:
        return None if self._position is None else dict(self._position)

    def _parse_position(self, position: Mapping[str, Any] | None) -> StoredPosition | None:
        if position is None:
            return None
        try:
            return StoredPosition.parse(position)
        except ValueError as exc:
            raise SourceError(
                f"source {self.name!r}: stored position {dict(position)!r} is not a file "
                f"position ({exc}); delete it to read the file from the start."
            ) from exc


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
