"""StdinSource: line-number offsets, no position, exhaustion at end of input, real pipes."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator

import pytest

from adapters import StdinSource


def test_jsonl_from_a_byte_stream() -> None:
    stream = io.BytesIO(b'{"i": 0}\n\nbad\n{"i": 3}')
    source = StdinSource(stream=stream)
    source.open(None)
    batches = [source.fetch(100, timeout_s=0.1) for _ in range(2)]
    assert [(r.offset_key, r.error) for b in batches for r in b.records] == [
        ("stdin:1", None),
        ("stdin:3", "not_json"),
        ("stdin:4", None),
    ]
    for batch in batches:
        assert batch.position is None and not batch.textual and not batch.exhausted
    last = source.fetch(100, timeout_s=0.1)
    assert last.exhausted and last.records == ()
    assert source.lag is None


def test_csv_with_header_from_a_byte_stream() -> None:
    stream = io.BytesIO(b'a,b\n1,"x,y"\n2\n')
    source = StdinSource("pipe", format="csv", stream=stream)
    source.open(None)
    batch = source.fetch(100, timeout_s=0.1)
    assert batch.textual and batch.source == "pipe"
    assert [r.fields for r in batch.records] == [{"a": "1", "b": "x,y"}, None]
    assert [r.offset_key for r in batch.records] == ["stdin:2", "stdin:3"]


def test_max_records_splits_batches_and_line_numbers_continue() -> None:
    stream = io.BytesIO(b"".join(b'{"i": %d}\n' % i for i in range(7)))
    source = StdinSource(stream=stream)
    source.open(None)
    sizes, keys = [], []
    while not (batch := source.fetch(3, timeout_s=0.1)).exhausted:
        sizes.append(len(batch.records))
        keys += [r.offset_key for r in batch.records]
    assert sizes == [3, 3, 1]
    assert keys == [f"stdin:{n}" for n in range(1, 8)]


def test_a_stored_position_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    source = StdinSource(stream=io.BytesIO(b'{"i": 0}\n'))
    source.open({"path": "x", "inode": 1, "offset": 5})
    assert "cannot resume" in caplog.text
    assert len(source.fetch(10, 0.1).records) == 1


@pytest.fixture
def pipe() -> Iterator[tuple[io.BufferedReader, int]]:
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb")
    try:
        yield reader, write_fd
    finally:
        reader.close()
        try:
            os.close(write_fd)
        except OSError:
            pass


def test_a_pipe_with_no_data_returns_empty_within_the_timeout(
    pipe: tuple[io.BufferedReader, int],
) -> None:
    reader, write_fd = pipe
    source = StdinSource(stream=reader)
    source.open(None)
    started = time.monotonic()
    batch = source.fetch(10, timeout_s=0.1)
    assert batch.records == () and not batch.exhausted
    assert 0.09 <= time.monotonic() - started < 1.0
    os.write(write_fd, b'{"i": 1}\n{"i": ')
    assert [r.fields for r in source.fetch(10, timeout_s=1).records] == [{"i": 1}]
    os.write(write_fd, b"2}")
    os.close(write_fd)  # end of input completes the last line
    assert [r.fields for r in source.fetch(10, timeout_s=1).records] == [{"i": 2}]
    assert source.fetch(10, timeout_s=1).exhausted


def test_fetch_after_close_is_refused() -> None:
    source = StdinSource(stream=io.BytesIO(b""))
    with pytest.raises(RuntimeError, match="open"):
        source.fetch(1, 0)
    source.open(None)
    source.close()
    source.close()
    with pytest.raises(RuntimeError, match="open"):
        source.fetch(1, 0)


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="format"):
        StdinSource(format="xml", stream=io.BytesIO())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs columns"):
        StdinSource(format="csv", header=False, stream=io.BytesIO())
    with pytest.raises(ValueError, match="max_record_bytes"):
        StdinSource(max_record_bytes=0, stream=io.BytesIO())
