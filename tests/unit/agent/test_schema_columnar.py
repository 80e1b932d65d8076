"""The encoder reads a columnar CSV block exactly as it reads the same records as dicts."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from adapters._lines import LineSplitter
from adapters.columnar import ColumnarRecords
from adapters.parsing import CsvParser
from agent.config import load_config
from agent.datafile import read_records
from agent.schema import Encoded, Encoder

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "examples" / "nsl-kdd"


@pytest.fixture(scope="module")
def encoder_and_columns() -> tuple[Encoder, list[str]]:
    config = load_config(REPO / "agent.yaml", check_environment=False)
    columns = list(config.schema.columns or [])
    reference = read_records(SAMPLE / "reference.csv.gz", columns=columns, header=False)
    return Encoder(config.schema).fit(reference.records, textual=True), columns


def parsed(columns: list[str], data: bytes) -> tuple[object, list[object]]:
    splitter = LineSplitter(10_000)
    splitter.feed(data)
    splitter.finish()
    block = splitter.take(100_000)
    assert block is not None
    keys = [str(start) for start in block.starts]
    parser = CsvParser(columns=columns, header=False, delimiter=",", max_record_bytes=10_000)
    return parser.parse_block(block, keys), parser.parse(block, keys)


def assert_same(a: Encoded, b: Encoded) -> None:
    np.testing.assert_array_equal(a.ok, b.ok)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.errors == b.errors
    np.testing.assert_array_equal(a.features.numeric, b.features.numeric)
    np.testing.assert_array_equal(a.features.categorical, b.features.categorical)
    assert (a.labels is None) == (b.labels is None)
    if a.labels is not None and b.labels is not None:
        assert a.labels.tolist() == b.labels.tolist()


def test_the_sample_stream_encodes_identically(encoder_and_columns: tuple[Encoder, list[str]]
                                               ) -> None:
    encoder, columns = encoder_and_columns
    data = gzip.decompress((SAMPLE / "stream.csv.gz").read_bytes())
    block, records = parsed(columns, data[: data.index(b"\n", 400_000) + 1])
    assert isinstance(block, ColumnarRecords)
    assert_same(encoder.encode(block, textual=True),
                encoder.encode([r.fields for r in records], textual=True))  # type: ignore[attr-defined]


@pytest.mark.parametrize("cell, reason", [
    ("abc", "wrong_type"),   # the cast refuses the column; cell-by-cell reading names the row
    ("nan", "non_finite"),
    ("1e999", "non_finite"),
    (" 7", None),            # float() reads it, so the columnar path must too
    ("1_000", None),
    ("", "missing_field"),
])
def test_a_bad_numeric_cell_gets_the_same_verdict(encoder_and_columns: tuple[Encoder, list[str]],
                                                  cell: str, reason: str | None) -> None:
    encoder, columns = encoder_and_columns
    lines = gzip.decompress((SAMPLE / "stream.csv.gz").read_bytes()).split(b"\n")[:50]
    cells = lines[7].decode().split(",")
    cells[4] = cell  # src_bytes
    lines[7] = ",".join(cells).encode()
    block, records = parsed(columns, b"\n".join(lines) + b"\n")
    assert isinstance(block, ColumnarRecords)
    columnar = encoder.encode(block, textual=True)
    assert_same(columnar, encoder.encode([r.fields for r in records],  # type: ignore[attr-defined]
                                         textual=True))
    assert [(e.index, e.reason) for e in columnar.errors] == ([] if reason is None
                                                              else [(7, reason)])
