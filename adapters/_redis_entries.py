"""Turning Redis stream entries into `RawRecord`s, the same way whichever way they were read.

An entry is an id and a map of fields. Producers use one of two shapes, and `EntryParser`
reads both:

* one field (``field: data``) holding the record as a JSON object or a CSV line, parsed by the
  same parsers as files (so a bad value is quarantined with the same reasons);
* the entry's own fields as the record (``XADD events * port 22 proto tcp``): values arrive as
  text, and the encoder parses numbers as it does for CSV.

The entry id (``"1718000000000-0"``) is the record's offset key: it never changes, whichever
replica reads the entry and however often, so the store keys incidents and quarantine rows by it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Literal

import orjson

from adapters._lines import EXCERPT_BYTES
from adapters.base import ERROR_MISSING_FIELD, RawRecord
from adapters.parsing import (
    CsvParser,
    JsonlParser,
    decode_error_record,
    oversize_record,
    parse_values,
)

EntryFormat = Literal["json", "csv"]
Entry = tuple[str, Mapping[bytes, bytes]]
"""An entry as read: its id, and its fields as bytes (field names included)."""


class EntryParser:
    """Records from stream entries.

    Parameters
    ----------
    field:
        The field holding each record, or ``None`` to take the entry's fields as the record.
    format:
        How ``field`` is written: ``"json"`` (an object) or ``"csv"`` (one line, no header).
    columns:
        Names of the CSV cells; required for ``"csv"``.
    delimiter:
        The CSV cell separator.
    max_record_bytes:
        Larger values (or entries, without ``field``) become ``"oversize"`` error records.

    Examples
    --------
    >>> parser = EntryParser(field="data", format="json", max_record_bytes=1000)
    >>> [(r.offset_key, r.fields, r.error) for r in parser.parse([
    ...     ("1-0", {b"data": b'{"port": 22}'}), ("2-0", {b"other": b"x"})])]
    [('1-0', {'port': 22}, None), ('2-0', None, 'missing_field')]
    >>> EntryParser(field=None, max_record_bytes=1000).parse([("3-0", {b"port": b"22"})])[0].fields
    {'port': '22'}
    """

    def __init__(self, *, field: str | None, format: EntryFormat = "json",
                 columns: Sequence[str] | None = None, delimiter: str = ",",
                 max_record_bytes: int = 1_048_576) -> None:
        if field is not None and not field:
            raise ValueError("field must be a non-empty string or None.")
        if format not in ("json", "csv"):
            raise ValueError(f"format must be one of ['json', 'csv'], got {format!r}.")
        if format == "csv" and field is not None and not columns:
            raise ValueError("format 'csv' needs columns to name the cells of each line.")
        if max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be at least 1, got {max_record_bytes}.")
        self.field = field
        self.format = format
        self.max_record_bytes = max_record_bytes
        self._field_bytes = None if field is None else field.encode()
        self._parser: JsonlParser | CsvParser = (
            CsvParser(columns=columns, header=False, delimiter=delimiter,
                      max_record_bytes=max_record_bytes)
            if format == "csv" and field is not None else JsonlParser(max_record_bytes))

    @property
    def textual(self) -> bool:
        """Whether field values are untyped text (CSV lines, or the entry's own fields)."""
        return self.field is None or self.format == "csv"

    def parse(self, entries: Sequence[Entry]) -> list[RawRecord]:
        """One record per entry, in order; never raises on bad content."""
        if self._field_bytes is None:
            return [self._fields_record(key, fields) for key, fields in entries]
        wanted = self._field_bytes
        records: list[RawRecord] = []
        keys: list[str] = []
        values: list[bytes] = []
        for key, fields in entries:
            value = fields.get(wanted)
            if value is not None:
                keys.append(key)
                values.append(value)
                continue
            if keys:
                records.extend(parse_values(self._parser, keys, values, self.max_record_bytes))
                keys, values = [], []
            records.append(self._missing(key, fields))
        if keys:
            records.extend(parse_values(self._parser, keys, values, self.max_record_bytes))
        return records

    def _missing(self, key: str, fields: Mapping[bytes, bytes]) -> RawRecord:
        names = sorted(name.decode("utf-8", "backslashreplace") for name in fields)
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        return RawRecord(key, _excerpt(fields), None, ERROR_MISSING_FIELD,
                         f"entry has no field {self.field!r} (its fields: {shown})")

    def _fields_record(self, key: str, fields: Mapping[bytes, bytes]) -> RawRecord:
        size = sum(len(name) + len(value) for name, value in fields.items())
        if size > self.max_record_bytes:
            excerpt = _render(fields).encode()[:EXCERPT_BYTES]
            return oversize_record(key, excerpt, size, self.max_record_bytes)
        try:
            record = {name.decode(): value.decode() for name, value in fields.items()}
        except UnicodeDecodeError:
            return self._undecodable(key, fields)
        return RawRecord(key, orjson.dumps(record).decode(), record)

    @staticmethod
    def _undecodable(key: str, fields: Mapping[bytes, bytes]) -> RawRecord:
        """The ``"decode"`` error record naming the first field name or value that is not UTF-8."""
        for part in (part for pair in fields.items() for part in pair):
            try:
                part.decode()
            except UnicodeDecodeError as exc:
                return decode_error_record(key, part, exc)._replace(raw=_render(fields))
        raise AssertionError("every part decoded")  # pragma: no cover - called on a failure


def _excerpt(fields: Mapping[bytes, bytes]) -> str:
    """`_render` of the start of each name and value, at most `EXCERPT_BYTES` characters.

    An entry without the expected field was never held to ``max_record_bytes``, so rendering
    all of it would put an unbounded excerpt in the quarantine (found by fuzzing).
    """
    cut = {name[:EXCERPT_BYTES]: value[:EXCERPT_BYTES]
           for name, value in islice(fields.items(), 64)}
    return _render(cut)[:EXCERPT_BYTES]


def _render(fields: Mapping[bytes, bytes]) -> str:
    """The entry's fields as one line of JSON-like text for an analyst (bytes escaped)."""
    shown = {name.decode("utf-8", "backslashreplace"): value.decode("utf-8", "backslashreplace")
             for name, value in fields.items()}
    return orjson.dumps(shown).decode()
