"""Records piped into the daemon on standard input (``zcat flows.csv.gz | metasentry run``).

A pipe cannot be rewound, so this source is not resumable: its batches carry no position and
its offsets are line numbers (``"stdin:<n>"``, counting from 1). It is exhausted at end of input.
"""

from __future__ import annotations

import io
import logging
import select
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

from adapters._lines import LineSplitter, line_number_keys
from adapters.base import Batch, RecordFormat, check_fetch
from adapters.parsing import make_parser

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 16


class StdinSource:
    """Lines of JSON or CSV read from a byte stream, standard input by default.

    Parameters
    ----------
    name:
        Name of the source, as in ``agent.yaml``.
    format:
        ``"jsonl"`` or ``"csv"``.
    columns, header, delimiter:
        CSV settings, as for `adapters.files.CsvFileSource`.
    stream:
        Where to read from; defaults to ``sys.stdin.buffer``. Streams with a file descriptor
        are waited on with ``select`` so that ``fetch`` honours its timeout.
    max_record_bytes:
        Longer lines become ``"oversize"`` error records holding an excerpt.

    Examples
    --------
    >>> import io
    >>> source = StdinSource(format="jsonl", stream=io.BytesIO(b'{"port": 22}\\nnot json\\n'))
    >>> source.open(None)
    >>> batch = source.fetch(max_records=10, timeout_s=0.1)
    >>> [(r.offset_key, r.error) for r in batch.records]
    [('stdin:1', None), ('stdin:2', 'not_json')]
    >>> source.fetch(10, 0.1).exhausted
    True
    """

    def __init__(
        self,
        name: str = "stdin",
        *,
        format: RecordFormat = "jsonl",
        columns: Sequence[str] | None = None,
        header: bool = True,
        delimiter: str = ",",
        stream: BinaryIO | None = None,
        max_record_bytes: int = 1_048_576,
    ) -> None:
        if not name:
            raise ValueError("name must be a non-empty string.")
        if max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be at least 1, got {max_record_bytes}.")
        self.name = name
        self.format = format
        self.max_record_bytes = max_record_bytes
        self._parser = make_parser(
            format,
            columns=columns,
            header=header,
            delimiter=delimiter,
            max_record_bytes=max_record_bytes,
        )
        self._stream: BinaryIO = sys.stdin.buffer if stream is None else stream
        self._fd = self._selectable_fd(self._stream)
        self._splitter = LineSplitter(max_record_bytes)
        self._at_eof = False
        self._opened = False
        self._closed = False

    @property
    def lag(self) -> int | None:
        """Unknown: a pipe does not say how much is still coming."""
        return None

    def open(self, position: Mapping[str, Any] | None) -> None:
        """Start reading; a stored ``position`` is ignored because a pipe cannot be rewound."""
        if position is not None:
            logger.warning(
                "source %r reads stdin, which cannot resume; position ignored", self.name
            )
        self._opened = True

    def fetch(self, max_records: int, timeout_s: float) -> Batch:
        """Up to ``max_records`` records, waiting up to ``timeout_s`` for the first one."""
        check_fetch(self.name, max_records, timeout_s, readable=self._opened and not self._closed)
        deadline = time.monotonic() + timeout_s
        textual = self._parser.textual
        while True:
            block = self._splitter.take(max_records)
            if block is not None:
                records = self._parser.parse_block(block, line_number_keys("stdin", block))
                if records:
                    return Batch(self.name, records, None, textual)
                continue
            if self._at_eof:
                return Batch(self.name, (), None, textual, exhausted=True)
            remaining = deadline - time.monotonic()
            data = self._read(max(remaining, 0.0))
            if data is None:
                if remaining <= 0:
                    return Batch(self.name, (), None, textual)
                if self._fd is None:  # a non-blocking stream without a descriptor to wait on
                    time.sleep(min(0.01, remaining))
                continue
            if data:
                self._splitter.feed(data)
            else:
                self._splitter.finish()
                self._at_eof = True

    def ack(self, batch: Batch) -> None:
        """Nothing to remember: stdin cannot be replayed."""
        if batch.source != self.name:
            raise ValueError(f"batch from source {batch.source!r} acknowledged to {self.name!r}.")

    def close(self) -> None:
        """Stop reading; the stream itself belongs to the caller and stays open."""
        self._closed = True

    def _read(self, timeout_s: float) -> bytes | None:
        """Next chunk, ``b""`` at end of input, ``None`` if nothing came within the timeout."""
        if self._fd is not None:
            ready, _, _ = select.select([self._fd], [], [], timeout_s)
            if not ready:
                return None
        read1 = getattr(self._stream, "read1", None)
        return read1(_CHUNK_BYTES) if read1 is not None else self._stream.read(_CHUNK_BYTES)

    @staticmethod
    def _selectable_fd(stream: BinaryIO) -> int | None:
        try:
            return stream.fileno()
        except (OSError, ValueError, io.UnsupportedOperation):
            return None
