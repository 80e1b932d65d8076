"""Clean CSV blocks kept as columns give exactly the records the per-record path gives."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import CsvFileSource
from adapters._lines import LineBlock, LineSplitter
from adapters.columnar import ColumnarRecords
from adapters.parsing import CsvParser
from agent.columns import cast_floats

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "nsl-kdd" / "stream.csv.gz"
NAMES = ["a", "b", "c"]


def block_of(data: bytes) -> LineBlock:
    splitter = LineSplitter(1000)
    splitter.feed(data)
    splitter.finish()
    block = splitter.take(100_000)
    assert block is not None
    return block


def both_paths(data: bytes, header: bool = False) -> tuple[object, list[object]]:
    parser = CsvParser(columns=None if header else NAMES, header=header, delimiter=",",
                       max_record_bytes=1000)
    block = block_of(data)
    keys = [f"k{start}" for start in block.starts]
    columnar = parser.parse_block(block, keys)
    other = CsvParser(columns=None if header else NAMES, header=header, delimiter=",",
                      max_record_bytes=1000)
    return columnar, other.parse(block, keys)


def test_a_clean_block_is_columnar_and_reads_as_the_per_record_path() -> None:
    columnar, records = both_paths(b"1,x,2.5\n3,y,-0\n,z,1e999\n")
    assert isinstance(columnar, ColumnarRecords)
    assert list(columnar) == records
    assert columnar[-1] == records[-1] and len(columnar) == 3
    assert columnar[0].fields == {"a": "1", "b": "x", "c": "2.5"}
    assert columnar.keys == [r.offset_key for r in records]  # type: ignore[attr-defined]


@pytest.mark.parametrize("data", [
    b'1,"x,y",2\n3,y,4\n',          # a quoted cell
    b"1,x,2\r\n3,y,4\n",             # CRLF
    b"1,x\n3,y,4\n",                 # a short row
    b"1,x,2,9\n3,y,4\n",             # a long row
    b"1,x,2\n\xff,y,4\n",            # not UTF-8
    b"1,x\x00,2\n3,y,4\n",           # NUL
    b"1,x,2\n   \n3,y,4\n",          # whitespace only
    b"\xef\xbb\xbf1,x,2\n3,y,4\n",   # byte-order mark at the start of the stream
])
def test_a_block_the_compiled_reader_could_misread_takes_the_per_record_path(data: bytes
                                                                              ) -> None:
    columnar, records = both_paths(data)
    assert not isinstance(columnar, ColumnarRecords) or b"\xef\xbb\xbf" in data
    assert list(columnar) == records  # type: ignore[call-overload]


def test_the_header_block_is_read_record_by_record_and_the_rest_as_columns() -> None:
    parser = CsvParser(columns=None, header=True, delimiter=",", max_record_bytes=1000)
    splitter = LineSplitter(1000)
    splitter.feed(b"a,b,c\n1,x,2\n3,y,4\n5,z,6\n")
    splitter.finish()
    first = splitter.take(2)
    rest = splitter.take(10)
    assert first is not None and rest is not None
    head = parser.parse_block(first, ["h", "k1"])
    tail = parser.parse_block(rest, ["k2", "k3"])
    assert isinstance(head, tuple) and isinstance(tail, ColumnarRecords)
    assert [r.fields for r in [*head, *tail]] == [
        {"a": "1", "b": "x", "c": "2"}, {"a": "3", "b": "y", "c": "4"},
        {"a": "5", "b": "z", "c": "6"}]


CELL = st.text(alphabet=st.sampled_from(list('0123456789.-+eE ,"x\t\r_\u0661\u00a0é')),
               max_size=6)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(CELL, min_size=2, max_size=4), min_size=1, max_size=8))
def test_any_block_gives_the_same_records_on_both_paths(rows: list[list[str]]) -> None:
    data = b"".join((",".join(row) + "\n").encode() for row in rows)
    columnar, records = both_paths(data)
    assert list(columnar) == records  # type: ignore[call-overload]


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.one_of(st.text(max_size=12),
                 st.floats(allow_nan=True, allow_infinity=True).map(repr),
                 st.text(alphabet=st.sampled_from(list("0123456789.-+eEinfaINFA _")),
                         max_size=10)))
def test_the_compiled_cast_accepts_no_text_that_float_refuses(text: str) -> None:
    import pyarrow as pa

    cast = cast_floats(pa.array([text], type=pa.string()))
    if cast is None:
        return  # the encoder then reads the cell as the per-record path does
    expected = float(text)  # raises if the cast accepted text float() refuses
    assert (math.isnan(cast[0]) and math.isnan(expected)) or cast[0] == expected


def test_a_gzip_file_is_read_in_full_batches(tmp_path: Path) -> None:
    # gzip hands out small decompressed pieces; a batch still fills to max_records
    path = tmp_path / "stream.csv.gz"
    path.write_bytes(SAMPLE.read_bytes())
    lines = gzip.decompress(SAMPLE.read_bytes()).count(b"\n")
    source = CsvFileSource("s", path, columns=[f"c{i}" for i in range(43)], header=False,
                           mode="replay")
    source.open(None)
    sizes = []
    while True:
        batch = source.fetch(2000, 0.1)
        if batch.exhausted:
            break
        sizes.append(len(batch.records))
    source.close()
    assert sum(sizes) == lines
    assert sizes[:-1] == [2000] * (len(sizes) - 1)
