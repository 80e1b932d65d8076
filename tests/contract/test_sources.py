"""One suite over every record source: the at-least-once contract of `adapters.base.Source`.

Each case builds a source over the same logical content (23 good records with one bad line in
the middle) in its own format and transport; every test runs against every case. The Redis
Streams and MQTT cases run against the real servers (skipped, saying so, when they do not
answer): each line is one entry's ``data`` field or one message, and an empty line, which a
stream cannot carry as a record of nothing, is not added.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters import (
    ERROR_CODES,
    Batch,
    CsvFileSource,
    JsonlFileSource,
    MemorySource,
    RawRecord,
    RedisStreamSource,
    Source,
    StdinSource,
)
from adapters.http_ingest import HttpIngestSource, parse_ndjson
from adapters.mqtt import MqttSource
from tests import mqtt_broker
from tests.redis_server import REDIS_URL, redis_client

GOOD = 23
BAD_AT = 10
MAX_RECORDS = 5
POLL = 0.005


def content(record_format: str, *, header: bool, delimiter: str = ",") -> list[bytes]:
    """The lines of the shared test stream in ``record_format``.

    With another delimiter than the comma no cell needs quoting, so CSV blocks without a bad
    or blank line take the columnar path (`adapters.columnar`) and the rest the per-record one.
    """
    if record_format == "jsonl":
        lines = [b'{"id": %d, "name": "n,%d"}' % (i, i) for i in range(GOOD)]
        lines.insert(BAD_AT, b"this is not json")
        return lines
    if delimiter != ",":
        lines = [b"%d%sn,%d" % (i, delimiter.encode(), i) for i in range(GOOD)]
        lines.insert(BAD_AT, b"1,2,3")
        return [b"id" + delimiter.encode() + b"name", *lines] if header else lines
    lines = [b'%d,"n,%d"' % (i, i) for i in range(GOOD)]
    lines.insert(BAD_AT, b"1,2,3")
    return [b"id,name", *lines] if header else lines


Factory = Callable[[Path, list[bytes]], Source]


@dataclass(frozen=True)
class SourceCase:
    id: str
    format: str
    header: bool
    make: Factory
    finite: bool  # reports exhaustion at the end of its content
    resumable: bool  # positions let a new instance continue where the old one stopped
    marks: tuple[Any, ...] = ()
    delimiter: str = ","

    def lines(self) -> list[bytes]:
        return content(self.format, header=self.header, delimiter=self.delimiter)

    def build(self, tmp_path: Path, lines: list[bytes] | None = None) -> Source:
        return self.make(tmp_path, self.lines() if lines is None else lines)


def _file(tmp_path: Path, name: str, lines: list[bytes]) -> Path:
    path = tmp_path / name
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    return path


COLUMNS = ["id", "name"]

_REDIS_KEYS: list[str] = []  # streams made by the current test, deleted after it


def _redis(tmp_path: Path, lines: list[bytes], record_format: str) -> RedisStreamSource:
    """A consumer of a stream holding ``lines`` (added once: a second build reads it again)."""
    client = redis_client()
    key = "metasentry:test:contract:" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:16]
    if not client.exists(key):
        _REDIS_KEYS.append(key)
        for line in lines:
            if line:
                client.xadd(key, {"data": line})
    client.close()
    return RedisStreamSource("s", REDIS_URL, stream=key, group="g", consumer="c1",
                             field="data", format=record_format,
                             columns=COLUMNS if record_format == "csv" else None, start_id="0")


@pytest.fixture(autouse=True)
def _delete_redis_streams() -> Iterator[None]:
    yield
    if _REDIS_KEYS:
        client = redis_client()
        client.delete(*_REDIS_KEYS, *(f"{key}:dead" for key in _REDIS_KEYS))
        client.close()
        _REDIS_KEYS.clear()


class _IngestRequest(HttpIngestSource):
    """An ingest queue that receives ``lines`` as one NDJSON request as soon as it opens (the
    API only submits to an open source), under a fixed request key."""

    def __init__(self, lines: list[bytes]) -> None:
        super().__init__("s", max_queue_records=1000)
        self._body = b"".join(line + b"\n" for line in lines)

    def open(self, position: Any) -> None:
        super().open(position)
        self.submit("request-1", "digest", parse_ndjson(self._body, "request-1", 65_536))


def _ingest(lines: list[bytes]) -> HttpIngestSource:
    return _IngestRequest(lines)


_MQTT_SESSIONS: list[str] = []  # client ids made by the current test, dropped after it
_MQTT_SOURCES: list[MqttSource] = []  # closed after the test: paho reconnects until then


def _mqtt(tmp_path: Path, lines: list[bytes], record_format: str) -> MqttSource:
    """A persistent session holding ``lines`` as messages of one topic (published once: a
    second build resumes the session, and the broker sends unacknowledged ones again)."""
    mqtt_broker.require_broker()
    suffix = hashlib.sha1(str(tmp_path).encode()).hexdigest()[:16]
    client_id = f"metasentry-contract-{suffix}"
    topic = f"metasentry/test/contract/{suffix}"
    if client_id not in _MQTT_SESSIONS:
        _MQTT_SESSIONS.append(client_id)
        mqtt_broker.prepare_session(client_id, [f"{topic}/#"])
        mqtt_broker.publish(f"{topic}/data", [line for line in lines if line])
    source = MqttSource("s", mqtt_broker.MQTT_URL, topics=[f"{topic}/#"],
                        client_id=client_id, format="csv" if record_format == "csv" else "json",
                        columns=COLUMNS if record_format == "csv" else None,
                        connect_timeout_s=2.0)
    _MQTT_SOURCES.append(source)
    return source


@pytest.fixture(autouse=True)
def _drop_mqtt_sessions() -> Iterator[None]:
    yield
    for source in _MQTT_SOURCES:
        source.close()
    _MQTT_SOURCES.clear()
    for client_id in _MQTT_SESSIONS:
        mqtt_broker.drop_session(client_id)
    _MQTT_SESSIONS.clear()


CASES = [
    SourceCase(
        "jsonl-replay",
        format="jsonl",
        header=False,
        make=lambda t, lines: JsonlFileSource("s", _file(t, "s.jsonl", lines), mode="replay"),
        finite=True,
        resumable=True,
    ),
    SourceCase(
        "jsonl-gzip-replay",
        format="jsonl",
        header=False,
        make=lambda t, lines: JsonlFileSource("s", _file(t, "s.jsonl.gz", lines), mode="replay"),
        finite=True,
        resumable=True,
    ),
    SourceCase(
        "jsonl-follow",
        format="jsonl",
        header=False,
        make=lambda t, lines: JsonlFileSource(
            "s", _file(t, "s.jsonl", lines), mode="follow", poll_interval_s=POLL
        ),
        finite=False,
        resumable=True,
    ),
    SourceCase(
        "csv-header-replay",
        format="csv",
        header=True,
        make=lambda t, lines: CsvFileSource("s", _file(t, "s.csv", lines), mode="replay"),
        finite=True,
        resumable=True,
    ),
    SourceCase(
        "csv-columns-follow",
        format="csv",
        header=False,
        make=lambda t, lines: CsvFileSource(
            "s",
            _file(t, "s.csv", lines),
            mode="follow",
            header=False,
            columns=COLUMNS,
            poll_interval_s=POLL,
        ),
        finite=False,
        resumable=True,
    ),
    SourceCase(  # no quoted cells: clean blocks are read as columns
        "csv-semicolon-gzip-replay",
        format="csv",
        header=False,
        make=lambda t, lines: CsvFileSource(
            "s", _file(t, "s.csv.gz", lines), mode="replay", header=False, columns=COLUMNS,
            delimiter=";"),
        finite=True,
        resumable=True,
        delimiter=";",
    ),
    SourceCase(
        "stdin-jsonl",
        format="jsonl",
        header=False,
        make=lambda t, lines: StdinSource(
            "s", stream=io.BytesIO(b"".join(line + b"\n" for line in lines))
        ),
        finite=True,
        resumable=False,
    ),
    SourceCase(
        "stdin-csv",
        format="csv",
        header=True,
        make=lambda t, lines: StdinSource(
            "s", format="csv", stream=io.BytesIO(b"".join(line + b"\n" for line in lines))
        ),
        finite=True,
        resumable=False,
    ),
    SourceCase(
        "memory-jsonl",
        format="jsonl",
        header=False,
        make=lambda t, lines: MemorySource("s", lines),
        finite=True,
        resumable=True,
    ),
    SourceCase(
        "memory-csv",
        format="csv",
        header=False,
        make=lambda t, lines: MemorySource("s", lines, format="csv", header=False, columns=COLUMNS),
        finite=True,
        resumable=True,
    ),
    SourceCase(
        "redis-stream-json",
        format="jsonl",
        header=False,
        make=lambda t, lines: _redis(t, lines, "json"),
        finite=False,
        resumable=True,
        marks=(pytest.mark.redis,),
    ),
    SourceCase(
        "redis-stream-csv",
        format="csv",
        header=False,
        make=lambda t, lines: _redis(t, lines, "csv"),
        finite=False,
        resumable=True,
        marks=(pytest.mark.redis,),
    ),
    SourceCase(  # one request's records, as POST /v1/ingest queues them
        "http-ingest-ndjson",
        format="jsonl",
        header=False,
        make=lambda t, lines: _ingest(lines),
        finite=False,
        resumable=False,
    ),
    SourceCase(  # the broker's session resumes; the position only names committed keys
        "mqtt-json",
        format="jsonl",
        header=False,
        make=lambda t, lines: _mqtt(t, lines, "json"),
        finite=False,
        resumable=True,
    ),
    SourceCase(
        "mqtt-csv",
        format="csv",
        header=False,
        make=lambda t, lines: _mqtt(t, lines, "csv"),
        finite=False,
        resumable=True,
    ),
]


def _params(cases: list[SourceCase]) -> list[Any]:
    return [pytest.param(case, id=case.id, marks=case.marks) for case in cases]


@pytest.fixture(params=_params(CASES))
def case(request: pytest.FixtureRequest) -> SourceCase:
    return request.param  # type: ignore[no-any-return]


RESUMABLE = [case for case in CASES if case.resumable]


@pytest.fixture(params=_params(RESUMABLE))
def resumable_case(request: pytest.FixtureRequest) -> SourceCase:
    return request.param  # type: ignore[no-any-return]


def drain(source: Source, case: SourceCase) -> list[Batch]:
    """Fetch until the source is exhausted (finite) or has nothing more (follow)."""
    batches: list[Batch] = []
    for _ in range(1000):
        batch = source.fetch(MAX_RECORDS, timeout_s=0.05)
        batches.append(batch)
        if batch.exhausted or (not case.finite and not batch.records):
            return batches
    raise AssertionError("the source never ran dry")


def records_of(batches: list[Batch]) -> list[RawRecord]:
    return [record for batch in batches for record in batch.records]


def ids_of(records: list[RawRecord]) -> list[int | None]:
    return [None if r.fields is None else int(r.fields["id"]) for r in records]


EXPECTED_IDS = [*range(BAD_AT), None, *range(BAD_AT, GOOD)]


def test_implements_the_source_protocol(case: SourceCase, tmp_path: Path) -> None:
    source = case.build(tmp_path)
    assert isinstance(source, Source)
    assert source.name == "s"


def test_delivers_every_record_once_in_order(case: SourceCase, tmp_path: Path) -> None:
    source = case.build(tmp_path)
    source.open(None)
    batches = drain(source, case)
    records = records_of(batches)
    assert ids_of(records) == EXPECTED_IDS
    assert len({r.offset_key for r in records}) == len(records)
    good = [r for r in records if r.fields is not None]
    assert all(r.error is None and r.detail is None for r in good)
    assert good[3].fields is not None and good[3].fields["name"] == "n,3"
    for batch in batches:
        assert batch.source == "s"
        assert len(batch.records) <= MAX_RECORDS
        assert batch.textual == (case.format == "csv")
    source.close()


def test_a_bad_line_is_an_error_record_not_an_exception(case: SourceCase, tmp_path: Path) -> None:
    source = case.build(tmp_path)
    source.open(None)
    bad = records_of(drain(source, case))[BAD_AT]
    assert bad.fields is None
    assert bad.error in ERROR_CODES
    assert bad.detail and "\n" not in bad.detail
    assert bad.raw in ("this is not json", "1,2,3")


INVISIBLE = ["\x1c", "\x1f", "\x0b", "\x0c", "\x85", "\xa0", "\u2028", "\u3000", " \t"]


def test_every_non_empty_line_is_accounted_for(case: SourceCase, tmp_path: Path) -> None:
    lines = case.lines()
    first = 1 if case.header else 0  # keep the CSV header the first line
    for number, text in enumerate(INVISIBLE):
        lines.insert(first + 2 * number, text.encode())
    lines.insert(first, b"")  # an empty line carries nothing and is the only one skipped
    source = case.build(tmp_path, lines)
    source.open(None)
    records = records_of(drain(source, case))
    blank = [r for r in records if r.error == "blank"]
    assert [r.raw for r in blank] == INVISIBLE
    assert all(r.fields is None and r.detail for r in blank)
    assert ids_of([r for r in records if r.error != "blank"]) == EXPECTED_IDS
    assert len({r.offset_key for r in records}) == len(records)


def test_the_end_is_reported_as_exhaustion_or_an_empty_batch(
    case: SourceCase, tmp_path: Path
) -> None:
    source = case.build(tmp_path)
    source.open(None)
    last = drain(source, case)[-1]
    assert last.records == ()
    assert last.exhausted == case.finite
    again = source.fetch(MAX_RECORDS, timeout_s=0.01)
    assert again.records == () and again.exhausted == case.finite


def test_positions_are_json_serialisable(case: SourceCase, tmp_path: Path) -> None:
    source = case.build(tmp_path)
    source.open(None)
    for batch in drain(source, case):
        assert batch.position is None or json.loads(json.dumps(batch.position)) == batch.position
        if not case.resumable:
            assert batch.position is None


def test_offset_keys_are_the_same_when_read_again(case: SourceCase, tmp_path: Path) -> None:
    first = case.build(tmp_path)
    first.open(None)
    keys = [r.offset_key for r in records_of(drain(first, case))]
    first.close()
    second = case.build(tmp_path)  # files are rewritten in place: same inode, same bytes
    second.open(None)
    assert [r.offset_key for r in records_of(drain(second, case))] == keys


@pytest.mark.parametrize("stop_after", [1, 3])
def test_resuming_after_a_restart_loses_and_repeats_nothing(
    resumable_case: SourceCase, tmp_path: Path, stop_after: int
) -> None:
    case = resumable_case
    source = case.build(tmp_path)
    source.open(None)
    committed = [source.fetch(MAX_RECORDS, timeout_s=0.5) for _ in range(stop_after)]
    source.ack(committed[-1])
    uncommitted = source.fetch(MAX_RECORDS, timeout_s=0.5)  # lost in the crash
    source.close()
    restarted = case.build(tmp_path)
    restarted.open(committed[-1].position)
    rest = records_of(drain(restarted, case))
    assert ids_of(records_of(committed) + rest) == EXPECTED_IDS
    assert [r.offset_key for r in rest[: len(uncommitted.records)]] == [
        r.offset_key for r in uncommitted.records
    ]


def test_lag_is_unknown_or_drains_to_zero(case: SourceCase, tmp_path: Path) -> None:
    source = case.build(tmp_path)
    source.open(None)
    before = source.lag
    drain(source, case)
    after = source.lag
    if before is None:
        assert after is None
    else:
        assert before > 0 and after == 0


def test_an_empty_source_answers_within_its_timeout(case: SourceCase, tmp_path: Path) -> None:
    source = case.build(tmp_path, [b"id,name"] if case.header else [])
    source.open(None)
    started = time.monotonic()
    batch = source.fetch(MAX_RECORDS, timeout_s=0.05)
    assert batch.records == ()
    assert time.monotonic() - started < 1.0


def test_must_be_opened_before_fetching_and_closes_twice(case: SourceCase, tmp_path: Path) -> None:
    source = case.build(tmp_path)
    with pytest.raises(RuntimeError, match="open"):
        source.fetch(MAX_RECORDS, timeout_s=0)
    source.open(None)
    source.close()
    source.close()
