"""Turning blocks of lines into `RawRecord`s: JSON Lines and CSV, shared by every source.

Parsing never raises on bad input; each bad line becomes an error record (see
`adapters.base.ERROR_CODES`). Only an empty line (zero bytes, or a lone ``\\r``) carries nothing
and is skipped; a line of whitespace or control characters is not empty, and becomes a
``"blank"`` error record so that every byte a writer produced is accounted for. A UTF-8
byte-order mark at the very start of a stream is dropped, because spreadsheet exports put one
there.

Lines are split on ``\\n`` only, by `adapters._lines.LineSplitter`, and text is never split
again: ``str.splitlines`` would also break at U+2028, U+0085 and ``\\x1c``-``\\x1e``, which
are ordinary characters inside a record here.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import orjson

from adapters._lines import EXCERPT_BYTES, LineBlock
from adapters.base import (
    ERROR_BLANK,
    ERROR_CSV_COLUMNS,
    ERROR_DECODE,
    ERROR_NOT_JSON,
    ERROR_NOT_OBJECT,
    ERROR_OVERSIZE,
    RawRecord,
    SourceError,
)
from adapters.columnar import read_clean_csv

logger = logging.getLogger(__name__)

_BOM = b"\xef\xbb\xbf"


class RecordParser(Protocol):
    """Parses the lines of one stream, in order."""

    textual: bool
    """Whether parsed field values are untyped text."""

    def parse(self, block: LineBlock, keys: Sequence[str]) -> list[RawRecord]:
        """Records for the non-empty lines of ``block``; ``keys[i]`` identifies ``lines[i]``."""
        ...

    def parse_block(self, block: LineBlock, keys: Sequence[str]) -> Sequence[RawRecord]:
        """The same records, in whatever form is cheapest to hand to the pipeline."""
        ...


def oversize_record(key: str, excerpt: bytes, full_length: int, limit: int) -> RawRecord:
    """The error record standing for a line too long to keep."""
    return RawRecord(
        key,
        excerpt.decode("utf-8", "replace"),
        None,
        ERROR_OVERSIZE,
        f"line of {full_length} bytes exceeds max_record_bytes={limit}; "
        f"only its first {len(excerpt)} bytes are kept",
    )


def blank_record(key: str, text: str) -> RawRecord:
    """The error record for a non-empty line holding only whitespace or control characters.

    The detail names the code points, because the raw excerpt shows nothing an analyst can see.
    """
    shown = " ".join(f"U+{ord(char):04X}" for char in dict.fromkeys(text[:64]))
    return RawRecord(
        key, text, None, ERROR_BLANK, f"line of {len(text)} whitespace characters ({shown})"
    )


def decode_error_record(key: str, line: bytes, exc: UnicodeDecodeError) -> RawRecord:
    """The error record for a line that is not valid UTF-8."""
    return RawRecord(
        key,
        line.decode("utf-8", "backslashreplace"),
        None,
        ERROR_DECODE,
        f"not valid UTF-8: byte 0x{line[exc.start]:02x} at position {exc.start} ({exc.reason})",
    )


def _without_bom(block: LineBlock) -> list[bytes]:
    lines = block.lines
    if block.starts[0] == 0 and lines[0].startswith(_BOM):
        lines = [lines[0][len(_BOM) :], *lines[1:]]
    return lines


TextParser = Callable[[list[str], list[str]], list[RawRecord]]
"""Turns decoded lines (keys, texts) into records; empty texts are skipped."""


def parse_lines(
    keys: Sequence[str],
    lines: Sequence[bytes],
    oversize: Mapping[int, int],
    max_record_bytes: int,
    parse_texts: TextParser,
) -> list[RawRecord]:
    """Decode ``lines`` and hand the text to ``parse_texts``, keeping source order.

    A clean block (the usual case) is decoded with one ``bytes.decode`` call; a block holding an
    oversize, undecodable or CRLF-terminated line is taken line by line, and the runs of good
    lines between the bad ones still go to ``parse_texts`` together.
    """
    if not lines:
        return []
    if not oversize:
        joined = b"\n".join(lines)
        if b"\r" not in joined:
            try:
                return parse_texts(list(keys), joined.decode().split("\n"))
            except UnicodeDecodeError:
                pass
    records: list[RawRecord] = []
    run_keys: list[str] = []
    run_texts: list[str] = []
    for index, (key, line) in enumerate(zip(keys, lines, strict=True)):
        if index in oversize:
            problem = oversize_record(key, line, oversize[index], max_record_bytes)
        else:
            if line.endswith(b"\r"):
                line = line[:-1]
            try:
                run_texts.append(line.decode())
            except UnicodeDecodeError as exc:
                problem = decode_error_record(key, line, exc)
            else:
                run_keys.append(key)
                continue
        if run_texts:
            records.extend(parse_texts(run_keys, run_texts))
            run_keys, run_texts = [], []
        records.append(problem)
    if run_texts:
        records.extend(parse_texts(run_keys, run_texts))
    return records


class JsonlParser:
    """One JSON object per line, parsed with orjson.

    Parameters
    ----------
    max_record_bytes:
        The limit oversize lines broke, quoted in their error detail.
    """

    textual = False

    def __init__(self, max_record_bytes: int) -> None:
        self.max_record_bytes = max_record_bytes

    def parse(self, block: LineBlock, keys: Sequence[str]) -> list[RawRecord]:
        """Records for the non-empty lines of ``block``."""
        return parse_lines(
            keys, _without_bom(block), block.oversize, self.max_record_bytes, self._parse_texts
        )

    def parse_block(self, block: LineBlock, keys: Sequence[str]) -> Sequence[RawRecord]:
        """`parse`'s records as a tuple, as a `adapters.base.Batch` holds them."""
        return tuple(self.parse(block, keys))

    def parse_texts(self, keys: list[str], texts: list[str]) -> list[RawRecord]:
        """Records for decoded texts, one per text; empty texts are skipped."""
        return self._parse_texts(keys, texts)

    @staticmethod
    def _parse_texts(keys: list[str], texts: list[str]) -> list[RawRecord]:
        loads = orjson.loads
        records: list[RawRecord] = []
        append = records.append
        for key, text in zip(keys, texts, strict=True):
            try:
                value = loads(text)
            except orjson.JSONDecodeError as exc:
                if text.isspace():
                    append(blank_record(key, text))
                elif text:
                    append(RawRecord(key, text, None, ERROR_NOT_JSON, f"not JSON: {exc}"))
                continue
            if type(value) is dict:
                append(RawRecord(key, text, value))
            else:
                kind = type(value).__name__
                detail = f"JSON {kind} where an object was expected"
                append(RawRecord(key, text, None, ERROR_NOT_OBJECT, detail))
        return records


class CsvParser:
    """One CSV row per line, as ``{column: text}``.

    Column names come from ``columns`` or, when ``columns`` is ``None``, from the header line
    (the first line of each file; it is re-read after rotation or truncation). With both a
    header and ``columns``, the header line is skipped and ``columns`` names the cells.
    A quoted field may contain the delimiter but not a newline: one line is one record.

    Parameters
    ----------
    columns:
        Names of the cells, for headerless files (NSL-KDD) or to rename a header.
    header:
        Whether the first line of the stream is a header rather than a record.
    delimiter:
        The one-character cell separator.
    max_record_bytes:
        The limit oversize lines broke, quoted in their error detail.
    """

    textual = True

    def __init__(
        self,
        *,
        columns: Sequence[str] | None,
        header: bool,
        delimiter: str,
        max_record_bytes: int,
    ) -> None:
        if len(delimiter) != 1 or delimiter in '\r\n"':
            raise ValueError(
                f"delimiter must be one character other than a quote or newline, got {delimiter!r}."
            )
        if columns is not None:
            columns = list(columns)
            if not columns:
                raise ValueError("columns must name at least one column.")
            duplicates = sorted({name for name in columns if columns.count(name) > 1})
            if duplicates:
                raise ValueError(f"columns must be unique, but {duplicates} appear more than once.")
        if columns is None and not header:
            raise ValueError("a CSV without a header needs columns to name its cells.")
        self.header = header
        self.delimiter = delimiter
        self.max_record_bytes = max_record_bytes
        self._fixed_columns = columns
        self._columns: list[str] | None = columns

    @property
    def columns(self) -> list[str] | None:
        """Current column names; ``None`` until the header has been read."""
        return None if self._columns is None else list(self._columns)

    def load_header(self, line: bytes) -> None:
        """Take column names from a header line (used when resuming past the header).

        Raises
        ------
        SourceError
            When the header is not valid UTF-8, is empty or names a column twice.
        """
        try:
            text = line.decode("utf-8-sig").rstrip("\r")
        except UnicodeDecodeError as exc:
            raise SourceError(
                f"the CSV header is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                "re-encode the file as UTF-8."
            ) from exc
        cells = _split_rows([text], self.delimiter)[0]
        if isinstance(cells, str) or not text.strip():
            raise SourceError(
                f"the CSV header {text[:200]!r} cannot be read; give the file a header line "
                "or set header: false and columns."
            )
        if self._fixed_columns is not None:
            if len(cells) != len(self._fixed_columns):
                logger.warning(
                    "the CSV header has %d cells but %d columns are configured; "
                    "the configured names are used",
                    len(cells),
                    len(self._fixed_columns),
                )
            return
        duplicates = sorted({name for name in cells if cells.count(name) > 1})
        if duplicates:
            raise SourceError(
                f"the CSV header names {duplicates} more than once; rename them in the file "
                "or configure columns explicitly."
            )
        if self._columns is not None and cells != self._columns:
            logger.info("the CSV header changed to %d columns", len(cells))
        self._columns = cells

    def parse(self, block: LineBlock, keys: Sequence[str]) -> list[RawRecord]:
        """Records for the non-empty lines of ``block``, skipping the header line."""
        lines = _without_bom(block)
        skip = 0
        if self.header and block.starts[0] == 0:
            if 0 in block.oversize:
                raise SourceError(
                    f"the CSV header is longer than {self.max_record_bytes} bytes; raise "
                    "max_record_bytes or check that the input is the expected CSV."
                )
            self.load_header(lines[0])
            skip = 1
        if self._columns is None:
            raise SourceError("CSV records arrived before the header; the header must come first.")
        oversize = block.oversize
        if skip and oversize:
            oversize = {index - 1: length for index, length in oversize.items()}
        return parse_lines(
            keys[skip:], lines[skip:], oversize, self.max_record_bytes, self._parse_texts
        )

    def parse_block(self, block: LineBlock, keys: Sequence[str]) -> Sequence[RawRecord]:
        """`parse`'s records, as columns when the block is clean (`adapters.columnar`).

        The first block of a stream with a header, a block with an oversize line and any block
        the compiled reader would not read exactly as `parse` does take the per-record path.
        """
        if (self._columns is not None and not block.oversize
                and not (self.header and block.starts[0] == 0)):
            columnar = read_clean_csv(_without_bom(block), list(keys), self._columns,
                                      self.delimiter)
            if columnar is not None:
                return columnar
        return tuple(self.parse(block, keys))

    def parse_texts(self, keys: list[str], texts: list[str]) -> list[RawRecord]:
        """Records for decoded texts, one per text; empty texts are skipped.

        Raises
        ------
        SourceError
            When no column names are known yet (a header is expected and has not been read).
        """
        if self._columns is None:
            raise SourceError("CSV records arrived before the header; the header must come first.")
        return self._parse_texts(keys, texts)

    def _parse_texts(self, keys: list[str], texts: list[str]) -> list[RawRecord]:
        columns = self._columns
        assert columns is not None
        width = len(columns)
        records: list[RawRecord] = []
        append = records.append
        rows = _split_rows(texts, self.delimiter)
        for key, text, row in zip(keys, texts, rows, strict=True):
            # A one-column row of whitespace is as blank as any other, not a record of it.
            if type(row) is list and len(row) == width and (width > 1 or not text.isspace()):
                append(RawRecord(key, text, dict(zip(columns, row, strict=False))))
            elif not text:
                continue
            elif text.isspace():
                append(blank_record(key, text))
            elif isinstance(row, str):
                append(RawRecord(key, text, None, ERROR_CSV_COLUMNS, f"not CSV: {row}"))
            else:
                detail = f"expected {width} cells, got {len(row)}"
                append(RawRecord(key, text, None, ERROR_CSV_COLUMNS, detail))
        return records


def _split_rows(texts: list[str], delimiter: str) -> list[list[str] | str]:
    """Cells of each line, or the csv module's complaint about it, one entry per line.

    The lines go through one ``csv.reader`` for speed. The reader would join a line whose quote
    is left open with the lines after it; when that happens (or it raises) the lines involved
    are parsed again one by one, so a single bad line cannot swallow its neighbours.
    """
    try:
        every_row: list[list[str] | str] = list(csv.reader(texts, delimiter=delimiter))
    except csv.Error:
        pass
    else:
        if len(every_row) == len(texts):  # each row took at least one line, so exactly one
            return every_row
    rows: list[list[str] | str] = []
    reader = csv.reader(texts, delimiter=delimiter)
    total = len(texts)
    while len(rows) < total:
        try:
            row: list[str] | None = next(reader)
        except StopIteration:  # pragma: no cover - every line yields a row or an error
            row = None
        except csv.Error:
            row = None
        if row is not None and reader.line_num == len(rows) + 1:
            rows.append(row)
            continue
        stop = reader.line_num if reader.line_num > len(rows) else total  # lost track: finish
        rows.extend(_split_alone(text, delimiter) for text in texts[len(rows) : stop])
    return rows


def _split_alone(text: str, delimiter: str) -> list[str] | str:
    try:
        return next(csv.reader((text,), delimiter=delimiter))
    except csv.Error as exc:
        return str(exc)


def parse_values(
    parser: JsonlParser | CsvParser,
    keys: Sequence[str],
    values: Sequence[bytes],
    max_record_bytes: int,
) -> list[RawRecord]:
    """One record per value, for transports whose messages are records (Redis stream fields).

    Unlike `parse_lines`, a value is never split: a pretty-printed JSON object spanning lines
    is one record. An empty value carries nothing a line could be skipped for, yet it is a
    message that arrived, so it becomes a ``"blank"`` error record rather than vanishing.

    >>> [(r.fields, r.error) for r in parse_values(
    ...     JsonlParser(100), ["1-0", "2-0", "3-0"], [b'{"a":\\n 1}', b"", b"\\xff"], 100)]
    [({'a': 1}, None), (None, 'blank'), (None, 'decode')]
    """
    records: list[RawRecord] = []
    run_keys: list[str] = []
    run_texts: list[str] = []
    for key, value in zip(keys, values, strict=True):
        if len(value) > max_record_bytes:
            problem = oversize_record(key, value[:EXCERPT_BYTES], len(value), max_record_bytes)
        else:
            try:
                text = value.decode()
            except UnicodeDecodeError as exc:
                problem = decode_error_record(key, value, exc)
            else:
                if text:
                    run_keys.append(key)
                    run_texts.append(text)
                    continue
                problem = RawRecord(key, "", None, ERROR_BLANK, "empty value: nothing to read")
        if run_texts:
            records.extend(parser.parse_texts(run_keys, run_texts))
            run_keys, run_texts = [], []
        records.append(problem)
    if run_texts:
        records.extend(parser.parse_texts(run_keys, run_texts))
    return records


def make_parser(
    record_format: str,
    *,
    columns: Sequence[str] | None,
    header: bool,
    delimiter: str,
    max_record_bytes: int,
) -> JsonlParser | CsvParser:
    """The parser for ``record_format`` (``"jsonl"`` or ``"csv"``)."""
    if record_format == "jsonl":
        return JsonlParser(max_record_bytes)
    if record_format == "csv":
        return CsvParser(
            columns=columns, header=header, delimiter=delimiter, max_record_bytes=max_record_bytes
        )
    raise ValueError(f"format must be one of ['jsonl', 'csv'], got {record_format!r}.")
