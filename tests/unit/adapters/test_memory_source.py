"""MemorySource: the pipeline's test double parses and resumes like the real sources."""

from __future__ import annotations

import pytest

from adapters import MemorySource, SourceError


def test_records_positions_and_exhaustion() -> None:
    source = MemorySource("mem", ['{"i": 0}', b'{"i": 1}', "oops", '{"i": 3}'])
    source.open(None)
    assert source.lag == 4
    first = source.fetch(2, timeout_s=0)
    assert [r.offset_key for r in first.records] == ["memory:1", "memory:2"]
    assert first.position == {"line": 2}
    second = source.fetch(10, timeout_s=0)
    assert [r.error for r in second.records] == ["not_json", None]
    assert source.lag == 0
    last = source.fetch(10, timeout_s=0)
    assert last.exhausted and last.records == () and last.position == {"line": 4}
    source.ack(second)
    assert source.committed_position == {"line": 4}


def test_follow_mode_waits_for_appended_lines() -> None:
    source = MemorySource("mem", [], follow=True)
    source.open(None)
    empty = source.fetch(10, 0)
    assert empty.records == () and not empty.exhausted and empty.position is None
    source.append(['{"i": 0}'])
    assert [r.fields for r in source.fetch(10, 0).records] == [{"i": 0}]


def test_csv_resume_past_the_header() -> None:
    lines = ["a,b", "1,2", "3,4", "5"]
    first = MemorySource("mem", lines, format="csv")
    first.open(None)
    batch = first.fetch(2, 0)
    assert [r.fields for r in batch.records] == [{"a": "1", "b": "2"}]
    restarted = MemorySource("mem", lines, format="csv")
    restarted.open(batch.position)
    records = restarted.fetch(10, 0).records
    assert [r.fields for r in records] == [{"a": "3", "b": "4"}, None]
    assert records[1].error == "csv_columns"
    assert restarted.fetch(10, 0).textual


def test_oversize_lines_are_cut() -> None:
    source = MemorySource("mem", ["x" * 50, "{}"], max_record_bytes=10)
    source.open(None)
    records = source.fetch(10, 0).records
    assert [r.error for r in records] == ["oversize", None]


def test_malformed_position_and_foreign_batches_are_refused() -> None:
    source = MemorySource("mem", ["{}"])
    with pytest.raises(SourceError, match="delete it"):
        source.open({"line": -1})
    other = MemorySource("other", ["{}"])
    other.open(None)
    source.open(None)
    with pytest.raises(ValueError, match="acknowledged"):
        source.ack(other.fetch(1, 0))
