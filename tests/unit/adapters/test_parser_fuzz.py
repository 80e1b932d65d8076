"""Hostile bytes through every parser: never an exception, and every line accounted for.

Hypothesis builds byte streams that mix good JSON lines or CSV rows with what breaks parsers
in the field (invalid UTF-8, NUL bytes, byte-order marks mid-stream, lone ``\\r`` and CRLF,
lines longer than ``max_record_bytes``, 10,000-deep nesting, ``1e999``/``NaN``/``Infinity``,
duplicate keys) and feeds them in chunks that split lines, and UTF-8 sequences, anywhere.
The properties are the quarantine's promise: each non-empty line becomes exactly one
`RawRecord` (a good one, or an error with a bounded code, detail and excerpt), under a key no
other line has, in stream order; and the encoder turns the good ones into rows or named errors,
never a crash, so ``processed + quarantined == read`` holds end to end. The same promise is
checked for Redis stream entries, HTTP ingest bodies (NDJSON and JSON arrays) and MQTT
messages, whose values are records rather than lines.

The profile is derandomised and keeps no example database, so CI sees the same examples on
every run; regressions found by fuzzing are pinned with ``@example``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters._lines import EXCERPT_BYTES, LineSplitter
from adapters._redis_entries import EntryParser
from adapters.base import ERROR_CODES, ERROR_OVERSIZE, RawRecord
from adapters.parsing import CsvParser, JsonlParser
from agent.config import SchemaConfig
from agent.schema import Encoder

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
"""Stable in CI: the same examples each run, nothing remembered between runs."""

COLUMNS = ["x", "proto", "flag", "img", "label"]
LIMITS = (64, 4096, 1_048_576)
"""max_record_bytes drawn per example: tiny (most lines oversize), typical, the default."""
DETAIL_CHARS = 600
"""An error's detail is one line for an analyst, whatever the input held."""
ENCODER_REASONS = frozenset({"missing_field", "wrong_type", "non_finite", "bad_shape"})

_NUMBER_TEXTS = ["1e999", "-1e999", "1e-999", "-0", "-0.0", "NaN", "-NaN", "Infinity",
                 "-Infinity", "inf", "nan", "1" * 400, "123456789012345678901234567890",
                 "0x10", "1_000", " 12 ", "", "1e308", "4.9e-324", "true", "null"]


def _deep(depth: int, opener: str) -> bytes:
    if opener == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def _good_json(draw: st.DrawFn) -> bytes:
    record = {"x": draw(st.floats(-1e6, 1e6)), "proto": draw(st.sampled_from(["tcp", "udp"])),
              "flag": draw(st.booleans()), "img": [draw(st.integers(-9, 9)) for _ in range(2)],
              "label": "normal"}
    return orjson.dumps(record)


def _good_csv(draw: st.DrawFn) -> bytes:
    x = draw(st.floats(-1e6, 1e6))
    return f'{x},{draw(st.sampled_from(["tcp", "udp"]))},true,"[1,2]",normal'.encode()


def _hostile_values() -> st.SearchStrategy[str]:
    """JSON value texts an encoder has to refuse or take, none of which may crash it."""
    return st.one_of(
        st.sampled_from(_NUMBER_TEXTS),  # bare: NaN and friends are not JSON at all
        st.sampled_from(_NUMBER_TEXTS).map(lambda t: orjson.dumps(t).decode()),  # as strings
        st.sampled_from(["[1,2]", "[1,2,3]", "[[1,2]]", "[1e308,1e308]", "[true,false]",
                         '["a","b"]', "{}", "[]", "null", "true", "false", "18446744073709551616",
                         '"' + "z" * 5000 + '"', '"\\u0000"', '"\\ud800"', '"\ufeff"']),
        st.integers(1, 1200).map(lambda d: _deep(d, "[").decode()),
    )


@st.composite
def _hostile_json_record(draw: st.DrawFn) -> bytes:
    """An object line whose fields carry hostile values (and keys repeated or missing)."""
    parts = []
    for name in draw(st.lists(st.sampled_from(COLUMNS), min_size=0, max_size=7)):
        parts.append(f'"{name}":{draw(_hostile_values())}')
    return ("{" + ",".join(parts) + "}").encode()


@st.composite
def _hostile_csv_row(draw: st.DrawFn) -> bytes:
    cells = draw(st.lists(st.one_of(st.sampled_from(_NUMBER_TEXTS),
                                    st.sampled_from(['"[1,2]"', '"[1e999,0]"', '"[[1]]"', "tcp",
                                                     "yes", "maybe", '"unclosed', 'a"b', '""']),
                                    st.text(max_size=8).map(lambda t: t.replace("\n", ""))),
                          min_size=0, max_size=7))
    return ",".join(cells).encode()


@st.composite
def hostile_line(draw: st.DrawFn, *, csv: bool) -> bytes:
    """One line (without its ``\\n``) of good or hostile content."""
    good = _good_csv if csv else _good_json
    kind = draw(st.sampled_from(
        ["good", "good", "good", "record", "binary", "deep", "number", "dupe", "bom", "nul",
         "cr", "long", "blank", "empty"]))
    if kind == "good":
        return good(draw)
    if kind == "record":
        return draw(_hostile_csv_row()) if csv else draw(_hostile_json_record())
    if kind == "binary":
        return draw(st.binary(max_size=60)).replace(b"\n", b"")
    if kind == "deep":
        return _deep(draw(st.sampled_from([1023, 1024, 1025, 10_000])), draw(st.sampled_from("[{")))
    if kind == "number":
        return draw(st.sampled_from(_NUMBER_TEXTS)).encode()
    if kind == "dupe":
        return b'{"x":1,"x":"two","proto":"tcp","proto":null}'
    if kind == "bom":
        return b"\xef\xbb\xbf" + good(draw)
    if kind == "nul":
        line = bytearray(good(draw))
        line.insert(draw(st.integers(0, len(line))), 0)
        return bytes(line)
    if kind == "cr":  # a lone \r inside, or only \r
        line = bytearray(good(draw))
        line.insert(draw(st.integers(0, len(line))), 13)
        return draw(st.sampled_from([bytes(line), b"\r", b"\r\r", b"a\rb"]))
    if kind == "long":
        return good(draw) + b" " * draw(st.sampled_from([70, 5000, 200_000]))
    if kind == "blank":
        return draw(st.sampled_from([b" ", b"\t", b"\x0b\x0c", b"\xe2\x80\xa8", b"\x1c\x1d"]))
    return b""


@dataclass(frozen=True)
class Stream:
    """A fuzzed stream, how to chunk and block it, and the limit lines are held to."""

    data: bytes
    seed: int
    limit: int


@st.composite
def hostile_stream(draw: st.DrawFn, *, csv: bool, min_lines: int = 0,
                   max_lines: int = 40) -> Stream:
    """Lines joined by ``\\n`` or ``\\r\\n``, with or without a final newline."""
    count = draw(st.integers(min_lines, max_lines))  # lists would stay short: sizes spread out
    lines = [draw(hostile_line(csv=csv)) for _ in range(count)]
    ends = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=len(lines),
                         max_size=len(lines)))
    data = b"".join(line + end for line, end in zip(lines, ends, strict=True))
    if lines and draw(st.booleans()):
        data = data[: -len(ends[-1])]  # the last line has no newline
    return Stream(data, draw(st.integers(0, 2**32)), draw(st.sampled_from(LIMITS)))


def expected_starts(data: bytes) -> list[int]:
    """Offsets of the lines that must each yield one record.

    Only a line of zero bytes, a lone ``\\r``, or a byte-order mark alone at the very start
    carries nothing (see `adapters.parsing`); every other line is accounted for.
    """
    starts, offset = [], 0
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for line in lines:
        content = line[3:] if offset == 0 and line.startswith(b"\xef\xbb\xbf") else line
        if content not in (b"", b"\r"):
            starts.append(offset)
        offset += len(line) + 1
    return starts


def parse_chunked(stream: Stream, parser: JsonlParser | CsvParser, *,
                  as_batches: bool = False) -> list[RawRecord]:
    """The stream through a `LineSplitter` fed in random chunk sizes, parsed block by block.

    With ``as_batches`` the blocks go through ``parse_block``, the path sources take (CSV
    blocks may come back as columns), and the records are read back one by one.
    """
    rng = random.Random(stream.seed)
    splitter = LineSplitter(stream.limit)
    records: list[RawRecord] = []
    position = 0
    data = stream.data
    finished = False
    while not finished:
        if position < len(data):
            size = rng.choice([1, 2, 3, 7, 64, 4096, 1 << 20])
            splitter.feed(data[position : position + size])
            position += size
        else:
            splitter.finish()
            finished = True
        while (block := splitter.take(rng.randint(1, 8))) is not None:
            keys = [str(start) for start in block.starts]
            parse = getattr(parser, "parse_block", None) if as_batches else None
            records += list(parse(block, keys)) if parse else parser.parse(block, keys)
    return records


def check_records(records: Sequence[RawRecord], limit: int, raw_bound: int | None = None) -> None:
    """Each record good or a bounded error, as the quarantine and its metric need.

    ``raw_bound`` is for a raw rendered rather than read (a Redis entry's fields as JSON,
    escapes included); by default a good record's raw is the line itself.
    """
    for record in records:
        if record.error is None:
            assert isinstance(record.fields, dict), record
            assert len(record.raw.encode()) <= (raw_bound or limit)
        else:
            assert record.error in ERROR_CODES, record
            assert record.fields is None
            assert record.detail and len(record.detail) <= DETAIL_CHARS, record.detail
            bound = EXCERPT_BYTES if record.error == ERROR_OVERSIZE else max(
                EXCERPT_BYTES, raw_bound or 4 * limit)
            assert len(record.raw) <= bound, (record.error, len(record.raw))


def csv_parser(limit: int) -> CsvParser:
    return CsvParser(columns=COLUMNS, header=False, delimiter=",", max_record_bytes=limit)


@FUZZ
@given(stream=hostile_stream(csv=False))
@example(stream=Stream(b"\xef\xbb\xbf\n\xef\xbb\xbf{}\r\n\r\n\x00\n" + _deep(10_000, "["),
                       seed=1, limit=1_048_576))
def test_jsonl_every_line_is_one_record_whatever_the_bytes(stream: Stream) -> None:
    records = parse_chunked(stream, JsonlParser(stream.limit))
    check_records(records, stream.limit)
    assert [int(r.offset_key) for r in records] == expected_starts(stream.data)


@FUZZ
@given(stream=hostile_stream(csv=True))
@example(stream=Stream(b'"unclosed,1\n2,tcp,true,"[1,2]",normal\na\rb\n\x00,\r\n', seed=2,
                       limit=4096))
def test_csv_every_line_is_one_record_whatever_the_bytes(stream: Stream) -> None:
    records = parse_chunked(stream, csv_parser(stream.limit))
    check_records(records, stream.limit)
    assert [int(r.offset_key) for r in records] == expected_starts(stream.data)


@FUZZ
@given(stream=hostile_stream(csv=True))
def test_csv_records_do_not_depend_on_chunks_or_blocks(stream: Stream) -> None:
    """The csv reader runs over a whole block; a bad row must not change its neighbours,
    and the columnar path sources take must give the records the per-line path gives."""
    whole = Stream(stream.data, seed=0, limit=stream.limit)
    splitter = LineSplitter(stream.limit)
    splitter.feed(whole.data)
    splitter.finish()
    block = splitter.take(1_000_000)
    at_once = [] if block is None else csv_parser(stream.limit).parse(
        block, [str(start) for start in block.starts])
    assert parse_chunked(stream, csv_parser(stream.limit)) == at_once
    assert parse_chunked(stream, csv_parser(stream.limit), as_batches=True) == at_once


@st.composite
def _entries(draw: st.DrawFn) -> list[tuple[str, dict[bytes, bytes]]]:
    entries = []
    for index in range(draw(st.integers(0, 20))):
        value = draw(st.one_of(hostile_line(csv=draw(st.booleans())),
                               st.binary(max_size=40)))  # newlines too: a value is one record
        fields = draw(st.sampled_from([{b"data": value}, {b"other": value}, {},
                                       {b"data": value, value[:8]: b"\xff"},
                                       {value[:16] or b"k": value}]))
        entries.append((f"{1000 + index}-0", fields))
    return entries


@FUZZ
@given(entries=_entries(), limit=st.sampled_from(LIMITS))
@example(entries=[("1-0", {b"other": b"[" * 5000})], limit=64)  # its raw was the whole entry
def test_redis_entries_are_one_record_each_whatever_they_hold(
        entries: list[tuple[str, dict[bytes, bytes]]], limit: int) -> None:
    parsers = [EntryParser(field="data", format="json", max_record_bytes=limit),
               EntryParser(field="data", format="csv", columns=COLUMNS, max_record_bytes=limit),
               EntryParser(field=None, max_record_bytes=limit)]
    for parser in parsers:
        records = parser.parse(entries)
        assert [r.offset_key for r in records] == [key for key, _ in entries]
        # Fields rendered as JSON for the analyst: \u escapes make a byte at most 6 chars.
        check_records(records, limit, raw_bound=6 * limit + 64)


def _encoder() -> Encoder:
    schema = SchemaConfig(
        label="label", id="proto", timestamp="x",
        features=[{"name": "x", "type": "numeric", "transform": "log1p"},
                  {"name": "proto", "type": "categorical", "strip": True},
                  {"name": "flag", "type": "boolean"},
                  {"name": "img", "type": "tensor", "shape": [2]}])
    reference = [{"x": float(i), "proto": "tcp" if i % 2 else "udp", "flag": i % 3 == 0,
                  "img": [i, -i], "label": "normal"} for i in range(50)]
    return Encoder(schema).fit(reference)


ENCODER = _encoder()


@FUZZ
@given(stream=hostile_stream(csv=False))
@example(stream=Stream(b'{"x":1e308,"img":[1e308,1e308]}\n{"x":"NaN"}\n{"x":18446744073709551616}'
                       b'\n{"img":' + _deep(1000, "[") + b"}", seed=3, limit=1_048_576))
@example(stream=Stream(  # finite in float64, infinite in the float32 matrix: was a row of inf
    b'{"x":1,"proto":"tcp","flag":true,"img":[1e308,-1e308],"label":"a"}', seed=4, limit=4096))
def test_encoder_turns_every_parsed_record_into_a_row_or_a_named_error(stream: Stream) -> None:
    records = parse_chunked(stream, JsonlParser(stream.limit))
    good = [r.fields for r in records if r.fields is not None]
    encoded = ENCODER.encode(good)
    assert encoded.n_ok + len(encoded.errors) == len(good)
    assert [e.index for e in encoded.errors] == sorted({e.index for e in encoded.errors})
    for error in encoded.errors:
        assert error.reason in ENCODER_REASONS
        assert len(error.detail) <= DETAIL_CHARS
    assert np.isfinite(encoded.x).all()
    assert len(records) == len(expected_starts(stream.data))


@FUZZ
@given(stream=hostile_stream(csv=True))
def test_encoder_takes_hostile_csv_cells(stream: Stream) -> None:
    records = parse_chunked(stream, csv_parser(stream.limit))
    good = [r.fields for r in records if r.fields is not None]
    encoded = ENCODER.encode(good, textual=True)
    assert encoded.n_ok + len(encoded.errors) == len(good)
    assert all(e.reason in ENCODER_REASONS for e in encoded.errors)
    assert np.isfinite(encoded.x).all()


# --- the new sources: HTTP ingest bodies and MQTT messages ---------------------------------

_DEEP_ELEMENT = b"[" + _deep(300, "[") + b"]"
"""An array element nested deeper than orjson will write back (255 levels), though it reads it."""


def expected_indices(body: bytes) -> list[int]:
    """0-based indices of the lines of an NDJSON body that must each yield one record."""
    return [body.count(b"\n", 0, start) for start in expected_starts(body)]


@FUZZ
@given(stream=hostile_stream(csv=False))
def test_http_ingest_ndjson_is_one_record_per_line(stream: Stream) -> None:
    from adapters.http_ingest import parse_ndjson

    records = parse_ndjson(stream.data, "req", stream.limit)
    check_records(records, stream.limit)
    assert [r.offset_key for r in records] == [
        f"req:{index}" for index in expected_indices(stream.data)]


def _json_elements() -> st.SearchStrategy[bytes]:
    """Array elements as JSON text: good records, hostile values, and deep nesting."""
    good = st.builds(lambda x, p: orjson.dumps({"x": x, "proto": p}),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
    hostile = st.one_of(_hostile_json_record(), _hostile_values().map(str.encode))
    return st.one_of(good, hostile,
                     st.sampled_from([_deep(250, "["), b'{"a":' + _deep(250, "{") + b"}"]))


@FUZZ
@given(elements=st.lists(_json_elements(), max_size=20), limit=st.sampled_from(LIMITS),
       noise=st.sampled_from([b"", b"\xef\xbb\xbf", b" \r\n", b"\x00"]))
def test_http_ingest_json_array_is_one_record_per_element_or_a_refusal(
        elements: list[bytes], limit: int, noise: bytes) -> None:
    from adapters.http_ingest import NotAnArray, parse_json_array

    body = noise + b"[" + b",".join(elements) + b"]" + noise
    try:
        count = len(orjson.loads(body))
    except orjson.JSONDecodeError:
        count = None
    try:
        records = parse_json_array(body, "req", limit)
    except NotAnArray:  # answered 400 with the reason: a refusal, not a crash
        assert count is None or type(orjson.loads(body)) is not list
        return
    assert [r.offset_key for r in records] == [f"req:{i}" for i in range(count or 0)]
    check_records(records, limit)


def test_http_ingest_json_array_element_deeper_than_orjson_writes() -> None:
    from adapters.http_ingest import parse_json_array

    records = parse_json_array(_DEEP_ELEMENT, "req", 1_048_576)
    assert [r.offset_key for r in records] == ["req:0"]
    check_records(records, 1_048_576)


@FUZZ
@given(payloads=st.lists(st.one_of(hostile_line(csv=False), st.binary(max_size=40)),
                         max_size=20),
       topic=st.sampled_from(["plant/7/telemetry", "a" * 5000, "\x00/\u2028/#"]),
       csv=st.booleans(), limit=st.sampled_from(LIMITS))
def test_mqtt_messages_are_one_record_each_with_a_bounded_key(
        payloads: list[bytes], topic: str, csv: bool, limit: int) -> None:
    """What `adapters.mqtt.MqttSource` does with a batch of messages, without a broker."""
    from adapters._mqtt_keys import MAX_KEY_CHARS, content_key, id_key
    from adapters.parsing import parse_values

    parser = csv_parser(limit) if csv else JsonlParser(limit)
    keys = [f"{index}:{content_key(topic, payload)}" for index, payload in enumerate(payloads)]
    records = parse_values(parser, keys, payloads, limit)
    assert [r.offset_key for r in records] == keys
    check_records(records, limit)
    for record in records:
        for value in (record.fields or {}).values():
            key = id_key(topic, value)
            assert key is None or len(key) <= MAX_KEY_CHARS
    assert all(len(content_key(topic, payload)) <= MAX_KEY_CHARS for payload in payloads)
