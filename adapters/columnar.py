"""Clean CSV blocks parsed in compiled code and kept as columns until a record is needed.

The per-record path (`adapters.parsing.CsvParser`) builds a dict and a `RawRecord` for every
line, and the encoder then transposes those dicts back into columns: on a clean stream most of
the agent's time went into objects nobody looks at. Here a block of lines is handed to
pyarrow's single-threaded CSV reader as one buffer, every cell kept as text, and the encoder
reads the columns directly (numbers are cast in compiled code, categories dictionary-encoded).
A record only becomes a `RawRecord` when something asks for it by index: the few that become
incidents or quarantine rows (its cells are then the line's pieces between delimiters, which
for a line without quotes is exactly what the csv module makes of it).

Only blocks the compiled reader cannot get wrong take this path: valid UTF-8, no quote
character, no carriage return, no NUL, no empty or oversize line, and exactly one cell per
column on every line. Anything else (or any complaint from the reader) sends the whole block
down the per-record path, so a bad line is quarantined with exactly the reason and detail it
always had; the two paths give the same records, which the tests check line for line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, overload

from adapters.base import RawRecord

if TYPE_CHECKING:  # pyarrow is imported on first use: a JSON-only agent never loads it
    import pyarrow as pa

__all__ = ["ColumnarRecords", "read_clean_csv"]

_UNSAFE = (b'"', b"\r", b"\x00", b"\n\n")
"""Bytes whose presence sends a block down the per-record path (see the module docstring)."""


class ColumnarRecords(Sequence[RawRecord]):
    """The records of one clean CSV block: columns of text, and records made on demand.

    Behaves as the tuple of `RawRecord`s the per-record path would have produced (indexing,
    iteration, ``len``), so every consumer of a `adapters.base.Batch` keeps working; the
    pipeline and the encoder look for `columns` and use them instead.
    """

    __slots__ = ("_delimiter", "_names", "_table", "keys", "lines")

    def __init__(self, names: Sequence[str], table: pa.Table, keys: list[str],
                 lines: Sequence[bytes], delimiter: str) -> None:
        self._names = list(names)
        self._table = table
        self._delimiter = delimiter
        self.keys = keys
        """Offset key of every record, in order."""
        self.lines = lines

    @property
    def names(self) -> list[str]:
        """The column names, in the order of the cells."""
        return list(self._names)

    def column(self, name: str) -> pa.Array:
        """One column as a pyarrow string array (every record has every column)."""
        return self._table.column(name).combine_chunks()

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, index: int) -> RawRecord: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[RawRecord]: ...

    def __getitem__(self, index: int | slice) -> RawRecord | Sequence[RawRecord]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._record(self.keys[index], self.lines[index])

    def __iter__(self) -> Iterator[RawRecord]:
        return map(self._record, self.keys, self.lines)

    def _record(self, key: str, line: bytes) -> RawRecord:
        # A clean line holds no quote, so its cells are exactly its pieces between delimiters:
        # the record the per-record path's csv.reader would have made.
        text = line.decode()
        return RawRecord(key, text, dict(zip(self._names, text.split(self._delimiter),
                                             strict=True)))

    def __repr__(self) -> str:
        return f"ColumnarRecords({len(self)} records, {len(self._names)} columns)"


def read_clean_csv(lines: Sequence[bytes], keys: list[str], names: Sequence[str],
                   delimiter: str) -> ColumnarRecords | None:
    """The block as columns, or ``None`` when it must take the per-record path.

    ``lines`` are complete lines without their newline and without a byte-order mark or a
    header; ``keys[i]`` identifies ``lines[i]``.
    """
    if not lines or len(names) < 2:
        return None  # a one-column CSV has blank-line rules the reader does not share
    joined = b"\n".join(lines)
    if not lines[0] or not lines[-1] or any(marker in joined for marker in _UNSAFE):
        return None
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    try:
        table = pa_csv.read_csv(
            pa.py_buffer(joined),
            read_options=pa_csv.ReadOptions(column_names=list(names), use_threads=False,
                                            block_size=max(len(joined) + 1, 1 << 16)),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, quote_char=False,
                                              double_quote=False, escape_char=False,
                                              newlines_in_values=False,
                                              ignore_empty_lines=False),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in names}, null_values=[],
                strings_can_be_null=False, quoted_strings_can_be_null=False, check_utf8=True),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
        return None  # a short row, a long row, bad UTF-8: the per-record path says which
    if table.num_rows != len(lines):
        return None
    return ColumnarRecords(names, table, keys, lines, delimiter)
