"""The encoder's view of a columnar block: numbers and categories read in compiled code.

A clean CSV block (`adapters.columnar.ColumnarRecords`) hands the encoder pyarrow string
columns. Casting a whole column to float64 and dictionary-encoding a category column are
single calls into compiled code, where the per-record path turned every cell into a Python
object first. Whenever a column is not as clean as that (a cell the cast refuses), the caller
falls back to the per-record conversion on the column's Python values, so both paths accept
and refuse exactly the same cells: the cast refuses some text Python's ``float`` reads
(surrounding spaces, ``1_000``, other scripts' digits) and the fallback then reads it, and the
tests check that it accepts nothing ``float`` refuses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adapters.columnar import ColumnarRecords


def is_arrow(column: Any) -> bool:
    """Whether ``column`` is a pyarrow array (a columnar block's) rather than Python values."""
    return isinstance(column, pa.Array | pa.ChunkedArray)


def python_values(column: Any) -> Sequence[Any]:
    """The column as the per-record path sees it: a sequence of Python values."""
    return column.to_pylist() if is_arrow(column) else column


def record_columns(records: ColumnarRecords, names: Sequence[str]) -> dict[str, Any]:
    """Every named field of the block as a pyarrow column (a CSV block has every column)."""
    return {name: records.column(name) for name in names}


def text_field(records: ColumnarRecords, name: str) -> np.ndarray:
    """A pass-through field (label, id, timestamp) as an object array; None where absent."""
    if name not in records.names:
        return np.full(len(records), None, dtype=object)
    return np.array(records.column(name).to_pylist(), dtype=object)


def cast_floats(column: Any) -> np.ndarray | None:
    """The column's text as float64, or ``None`` when some cell is not plain numeric text."""
    try:
        values = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def numeric_matrix(columns: Sequence[Any]) -> np.ndarray | None:
    """Float64 [rows, columns] of pyarrow text columns cast in one call, or ``None``.

    ``None`` when a column is not a pyarrow column or some cell is not plain numeric text:
    the encoder then reads column by column, and cell by cell where it must.
    """
    if not columns or not all(is_arrow(column) for column in columns):
        return None
    names = [str(i) for i in range(len(columns))]
    table = pa.table(list(columns), names=names)
    try:
        cast = table.cast(pa.schema([(name, pa.float64()) for name in names]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return np.column_stack([column.to_numpy() for column in cast.columns])


def category_codes(column: Any, lookup: Mapping[str, int], unknown: int) -> np.ndarray:
    """Vocabulary index of every cell (``unknown`` for values outside it), as int32.

    The column is dictionary-encoded once, so the vocabulary is consulted once per distinct
    value rather than once per record.
    """
    encoded = column.dictionary_encode()
    distinct = encoded.dictionary.to_pylist()
    codes = np.fromiter((lookup.get(value, unknown) for value in distinct), dtype=np.int32,
                        count=len(distinct))
    indices = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    return codes[indices] if len(distinct) else np.zeros(len(column), dtype=np.int32)
