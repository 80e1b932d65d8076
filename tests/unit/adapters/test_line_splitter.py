"""LineSplitter: lines and offsets must not depend on how the stream was chunked."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters._lines import EXCERPT_BYTES, LineBlock, LineSplitter, line_number_keys


def drain(splitter: LineSplitter, max_lines: int = 1_000_000) -> list[LineBlock]:
    blocks = []
    while (block := splitter.take(max_lines)) is not None:
        blocks.append(block)
    return blocks


def lines_of(blocks: list[LineBlock]) -> list[tuple[int, bytes]]:
    return [pair for block in blocks for pair in zip(block.starts, block.lines, strict=True)]


def test_complete_lines_come_out_with_their_start_offsets() -> None:
    splitter = LineSplitter(100)
    splitter.feed(b"ab\ncde\n\nf\n")
    (block,) = drain(splitter)
    assert block.lines == [b"ab", b"cde", b"", b"f"]
    assert block.starts == [0, 3, 7, 8]
    assert block.end == 10
    assert block.oversize == {}


def test_partial_line_waits_for_its_newline() -> None:
    splitter = LineSplitter(100)
    splitter.feed(b"one\ntw")
    assert lines_of(drain(splitter)) == [(0, b"one")]
    assert splitter.has_partial_line
    splitter.feed(b"o\nthr")
    assert lines_of(drain(splitter)) == [(4, b"two")]
    assert splitter.consumed == 8


def test_finish_turns_the_unterminated_last_line_into_a_line() -> None:
    splitter = LineSplitter(100)
    splitter.feed(b"a\nlast")
    splitter.finish()
    blocks = drain(splitter)
    assert lines_of(blocks) == [(0, b"a"), (2, b"last")]
    assert blocks[-1].end == 6


def test_take_respects_max_lines_and_numbers_lines_from_one() -> None:
    splitter = LineSplitter(100)
    splitter.feed(b"".join(b"%d\n" % i for i in range(10)))
    first = splitter.take(4)
    second = splitter.take(4)
    third = splitter.take(4)
    assert first is not None and second is not None and third is not None
    assert [len(b.lines) for b in (first, second, third)] == [4, 4, 2]
    assert (first.first_number, second.first_number, third.first_number) == (1, 5, 9)
    assert first.end == second.starts[0]
    assert line_number_keys("stdin", second) == ["stdin:5", "stdin:6", "stdin:7", "stdin:8"]
    assert splitter.take(4) is None


def test_oversize_line_within_a_chunk_is_cut_to_an_excerpt() -> None:
    long_line = b"x" * (EXCERPT_BYTES * 3)
    splitter = LineSplitter(50)
    splitter.feed(b"ok\n" + long_line + b"\nafter\n")
    (block,) = drain(splitter)
    assert block.lines == [b"ok", long_line[:EXCERPT_BYTES], b"after"]
    assert block.oversize == {1: len(long_line)}
    assert block.starts == [0, 3, 4 + len(long_line)]


def test_oversize_line_across_chunks_is_skipped_without_buffering_it() -> None:
    splitter = LineSplitter(10)
    splitter.feed(b"ok\n" + b"y" * 8)
    splitter.feed(b"y" * 5000)  # now over the limit: only the excerpt is kept
    assert len(splitter._tail) == 0  # nothing of the long line is buffered
    splitter.feed(b"y" * 5000 + b"\nnext\n")
    (block,) = drain(splitter)
    assert block.lines == [b"ok", b"y" * EXCERPT_BYTES, b"next"]
    assert block.oversize == {1: 10008}
    assert block.starts == [0, 3, 3 + 10008 + 1]


def test_oversize_line_at_end_of_stream_is_still_reported() -> None:
    splitter = LineSplitter(10)
    splitter.feed(b"z" * 30)
    splitter.finish()
    (block,) = drain(splitter)
    assert block.oversize == {0: 30}
    assert block.end == 30


def test_reset_forgets_buffered_bytes() -> None:
    splitter = LineSplitter(100)
    splitter.feed(b"stale\npartial")
    splitter.reset(0)
    splitter.feed(b"fresh\n")
    assert lines_of(drain(splitter)) == [(0, b"fresh")]


def test_invalid_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_line_bytes"):
        LineSplitter(0)
    with pytest.raises(ValueError, match="offset"):
        LineSplitter(10, offset=-1)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    data=st.binary(max_size=400).map(lambda b: b.replace(b"\x00", b"\n")),
    seed=st.integers(0, 2**16),
    limit=st.integers(1, 40),
)
def test_any_chunking_yields_the_lines_of_bytes_split(data: bytes, seed: int, limit: int) -> None:
    rng = random.Random(seed)
    splitter = LineSplitter(limit, offset=100)
    position = 0
    while position < len(data):
        size = rng.randint(1, 30)
        splitter.feed(data[position : position + size])
        position += size
    splitter.finish()
    blocks = drain(splitter, max_lines=rng.randint(1, 5))
    expected = data.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    got = lines_of(blocks)
    assert [line for _, line in got] == [line[:EXCERPT_BYTES] for line in expected]
    starts, offset = [], 100
    for line in expected:
        starts.append(offset)
        offset += len(line) + 1
    assert [start for start, _ in got] == starts
    flagged = {b.starts[i] for b in blocks for i in b.oversize}
    assert flagged == {s for s, line in zip(starts, expected, strict=True) if len(line) > limit}
    assert splitter.consumed == 100 + len(data)
