"""File sources in replay mode: everything once, then exhausted; gzip; resuming."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from adapters import Batch, CsvFileSource, JsonlFileSource, RawRecord, SourceError


def jsonl(count: int, start: int = 0) -> bytes:
    return b"".join(b'{"i": %d}\n' % i for i in range(start, start + count))


def read_all(source: JsonlFileSource | CsvFileSource, max_records: int = 1000) -> list[Batch]:
    batches = []
    for _ in range(10_000):
        batch = source.fetch(max_records, timeout_s=0.5)
        batches.append(batch)
        if batch.exhausted:
            return batches
    raise AssertionError("replay never reported exhaustion")


def records_of(batches: list[Batch]) -> list[RawRecord]:
    return [record for batch in batches for record in batch.records]


def test_replay_reads_every_line_once_and_then_reports_exhaustion(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(25))
    source = JsonlFileSource("events", path, mode="replay", poll_interval_s=0.01)
    source.open(None)
    batches = read_all(source, max_records=10)
    assert [len(b.records) for b in batches] == [10, 10, 5, 0]
    assert [r.fields["i"] for r in records_of(batches) if r.fields] == list(range(25))
    assert batches[-1].exhausted and not any(b.exhausted for b in batches[:-1])
    assert source.fetch(10, 0.1).exhausted  # and stays so
    inode = os.stat(path).st_ino
    assert batches[0].records[1].offset_key.endswith(":9")
    assert batches[0].records[1].offset_key.startswith(f"{inode}-")
    position = batches[-1].position
    assert position is not None
    assert (position["path"], position["inode"], position["offset"]) == (str(path), inode, 240)
    assert all(not b.textual for b in batches)
    json.dumps([b.position for b in batches])
    source.close()


def test_a_last_line_without_newline_is_a_record_in_replay(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"i": 0}\n{"i": 1}')
    source = JsonlFileSource("events", path, mode="replay")
    source.open(None)
    batches = read_all(source)
    assert [r.fields for r in records_of(batches)] == [{"i": 0}, {"i": 1}]
    assert batches[-1].position is not None and batches[-1].position["offset"] == 17


def test_missing_file_in_replay_mode_is_a_source_error(tmp_path: Path) -> None:
    source = JsonlFileSource("events", tmp_path / "absent.jsonl", mode="replay")
    with pytest.raises(SourceError, match="does not exist.*mode='follow'"):
        source.open(None)


def test_a_directory_is_a_source_error(tmp_path: Path) -> None:
    source = JsonlFileSource("events", tmp_path, mode="replay")
    with pytest.raises(SourceError, match="cannot open"):
        source.open(None)


def test_gzip_is_decompressed_and_offsets_count_decompressed_bytes(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl(30)))
    source = JsonlFileSource("events", path, mode="replay")
    source.open(None)
    batches = read_all(source, max_records=7)
    records = records_of(batches)
    assert [r.fields["i"] for r in records if r.fields] == list(range(30))
    inode = os.stat(path).st_ino
    assert records[2].offset_key.startswith(f"{inode}-") and records[2].offset_key.endswith(":18")
    position = batches[-1].position
    assert position is not None
    assert (position["path"], position["inode"], position["offset"]) == (str(path), inode, 290)
    assert position["fingerprint_bytes"] == 290  # of the content, not of the gzip bytes
    assert source.lag is None


def test_gzip_cannot_be_followed() -> None:
    with pytest.raises(ValueError, match="mode='replay'"):
        JsonlFileSource("events", "events.jsonl.gz", mode="follow")


def test_corrupt_gzip_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl(1000))[:200])
    source = JsonlFileSource("events", path, mode="replay")
    source.open(None)
    with pytest.raises(SourceError, match="could not be read"):
        read_all(source)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_resuming_reads_exactly_the_unread_lines(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"events{suffix}"
    data = jsonl(40)
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    first = JsonlFileSource("events", path, mode="replay")
    first.open(None)
    seen = [first.fetch(15, 0.5), first.fetch(10, 0.5)]
    first.ack(seen[-1])
    assert first.committed_position == seen[-1].position
    first.close()  # the daemon stops after committing 25 records

    restarted = JsonlFileSource("events", path, mode="replay")
    restarted.open(json.loads(json.dumps(seen[-1].position)))
    rest = records_of(read_all(restarted))
    assert [r.fields["i"] for r in rest if r.fields] == list(range(25, 40))
    keys = [r.offset_key for r in records_of(seen)] + [r.offset_key for r in rest]
    assert len(set(keys)) == 40


def test_resuming_at_the_end_reports_exhaustion_at_once(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(3))
    source = JsonlFileSource("events", path, mode="replay")
    source.open({"path": str(path), "inode": os.stat(path).st_ino, "offset": path.stat().st_size})
    assert source.fetch(10, 0.5).exhausted


def test_a_position_from_another_file_starts_from_the_beginning(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(5))
    stale = {"path": str(path), "inode": os.stat(path).st_ino + 1, "offset": 18}
    source = JsonlFileSource("events", path, mode="replay")
    source.open(stale)
    assert len(records_of(read_all(source))) == 5


def test_a_position_past_the_end_of_the_same_file_starts_from_the_beginning(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(5))
    source = JsonlFileSource("events", path, mode="replay")
    source.open({"path": str(path), "inode": os.stat(path).st_ino, "offset": 10_000})
    assert len(records_of(read_all(source))) == 5


@pytest.mark.parametrize(
    "position",
    [{"offset": 3}, {"inode": "x", "offset": 1}, {"inode": 1, "offset": -1}, {"line": 4}],
)
def test_a_malformed_position_is_a_source_error(
    tmp_path: Path, position: dict[str, object]
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(1))
    source = JsonlFileSource("events", path, mode="replay")
    with pytest.raises(SourceError, match="delete it"):
        source.open(position)


def test_lag_counts_the_bytes_not_yet_fetched(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(10))  # 9 bytes a line
    source = JsonlFileSource("events", path, mode="replay")
    assert source.lag is None  # not open yet
    source.open(None)
    assert source.lag == 90
    source.fetch(4, 0.5)
    assert source.lag == 54
    read_all(source)
    assert source.lag == 0


def test_oversize_line_spanning_read_chunks_is_one_error_record(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    huge = b'{"blob": "' + b"a" * (3 << 20) + b'"}'
    path.write_bytes(b'{"i": 0}\n' + huge + b'\n{"i": 2}\n')
    source = JsonlFileSource("events", path, mode="replay", max_record_bytes=4096)
    source.open(None)
    records = records_of(read_all(source))
    assert [r.error for r in records] == [None, "oversize", None]
    assert records[1].raw.startswith('{"blob": "aaa') and len(records[1].raw) <= 4096
    assert f"{len(huge)} bytes" in (records[1].detail or "")
    assert records[2].offset_key.endswith(f":{9 + len(huge) + 1}")


class TestCsvReplay:
    def test_header_file(self, tmp_path: Path) -> None:
        path = tmp_path / "flows.csv"
        path.write_text('duration,protocol,note\n0,tcp,"a,b"\n1,udp\n2,icmp,c\n')
        source = CsvFileSource("flows", path, mode="replay")
        source.open(None)
        batches = read_all(source)
        records = records_of(batches)
        assert [r.error for r in records] == [None, "csv_columns", None]
        assert records[0].fields == {"duration": "0", "protocol": "tcp", "note": "a,b"}
        assert all(b.textual for b in batches)
        assert source.columns == ["duration", "protocol", "note"]

    @pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
    def test_resuming_past_the_header_still_knows_the_columns(
        self, tmp_path: Path, suffix: str
    ) -> None:
        path = tmp_path / f"flows{suffix}"
        data = ("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(10))).encode()
        path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
        first = CsvFileSource("flows", path, mode="replay")
        first.open(None)
        batch = first.fetch(4, 0.5)
        first.close()
        restarted = CsvFileSource("flows", path, mode="replay")
        restarted.open(batch.position)
        records = records_of(read_all(restarted))
        assert len(batch.records) == 3  # the header took one of the four lines
        assert records[0].fields == {"a": "3", "b": "6"}
        assert len(records) == 7

    def test_nsl_kdd_sample_parses_without_errors(self) -> None:
        sample = Path(__file__).resolve().parents[3] / "examples/nsl-kdd/stream.csv.gz"
        if not sample.exists():
            pytest.skip(f"the bundled NSL-KDD sample {sample} is missing")
        columns = [f"f{i}" for i in range(41)] + ["label", "difficulty"]
        source = CsvFileSource("kdd", sample, mode="replay", header=False, columns=columns)
        source.open(None)
        records = records_of(read_all(source, max_records=4096))
        assert len(records) == 10_000
        assert all(r.error is None for r in records)
        assert records[0].fields is not None and records[0].fields["f1"] == "tcp"


def test_invalid_settings_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        JsonlFileSource("e", tmp_path / "x", mode="tail")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_record_bytes"):
        JsonlFileSource("e", tmp_path / "x", max_record_bytes=0)
    with pytest.raises(ValueError, match="poll_interval_s"):
        JsonlFileSource("e", tmp_path / "x", poll_interval_s=0)
    with pytest.raises(ValueError, match="name"):
        JsonlFileSource("", tmp_path / "x")
    with pytest.raises(ValueError, match="needs columns"):
        CsvFileSource("e", tmp_path / "x", header=False)
    source = JsonlFileSource("e", tmp_path / "x", mode="follow")
    with pytest.raises(RuntimeError, match="open"):
        source.fetch(1, 0)
    source.open(None)
    with pytest.raises(ValueError, match="max_records"):
        source.fetch(0, 0)
    with pytest.raises(ValueError, match="timeout_s"):
        source.fetch(1, -1)
