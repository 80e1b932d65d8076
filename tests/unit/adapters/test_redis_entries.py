"""Stream entries to records, and the helpers of the Redis Streams source that need no server
(the source itself against a real server is in test_redis_stream.py)."""

from __future__ import annotations

import doctest
import json
from typing import Any

import pytest

import adapters._outage
import adapters._redis_entries
import adapters._redis_stats
import adapters.parsing
import adapters.redis_stream
from adapters import RedisStreamSource
from adapters._redis_entries import EntryParser
from tests.redis_server import REDIS_URL

MODULES = [adapters._outage, adapters._redis_entries, adapters._redis_stats, adapters.parsing,
           adapters.redis_stream]


@pytest.mark.parametrize("module", MODULES, ids=[m.__name__ for m in MODULES])
def test_the_module_examples_run(module: Any) -> None:
    assert doctest.testmod(module).failed == 0


def test_one_field_holding_json_or_csv_and_the_entry_fields_themselves() -> None:
    json_parser = EntryParser(field="data", format="json", max_record_bytes=64)
    records = json_parser.parse([
        ("1-0", {b"data": b'{"port": 22,\n "proto": "tcp"}'}),  # a value is never split
        ("2-0", {b"data": b"[1, 2]"}),
        ("3-0", {b"data": b""}),
        ("4-0", {b"data": b"\xff\xfe"}),
        ("5-0", {b"data": b'{"pad": "' + b"x" * 100 + b'"}'}),
        ("6-0", {b"payload": b"{}", b"more": b"1"}),
    ])
    assert [(r.offset_key, r.error) for r in records] == [
        ("1-0", None), ("2-0", "not_object"), ("3-0", "blank"), ("4-0", "decode"),
        ("5-0", "oversize"), ("6-0", "missing_field")]
    assert records[0].fields == {"port": 22, "proto": "tcp"}
    assert records[5].detail == "entry has no field 'data' (its fields: more, payload)"
    assert not json_parser.textual

    csv_parser = EntryParser(field="line", format="csv", columns=["port", "proto"],
                             max_record_bytes=64)
    rows = csv_parser.parse([("1-0", {b"line": b'22,"t,cp"'}), ("2-0", {b"line": b"1,2,3"})])
    assert [(r.fields, r.error) for r in rows] == [({"port": "22", "proto": "t,cp"}, None),
                                                    (None, "csv_columns")]
    assert csv_parser.textual

    fields_parser = EntryParser(field=None, max_record_bytes=64)
    mapped = fields_parser.parse([("1-0", {b"port": b"22", b"proto": b"tcp"}),
                                  ("2-0", {b"port": b"\xff"}),
                                  ("3-0", {b"blob": b"y" * 100})])
    assert [(r.fields, r.error) for r in mapped] == [({"port": "22", "proto": "tcp"}, None),
                                                      (None, "decode"), (None, "oversize")]
    assert json.loads(mapped[0].raw) == {"port": "22", "proto": "tcp"}
    assert fields_parser.textual


def test_csv_without_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="format 'csv' needs columns"):
        EntryParser(field="line", format="csv", max_record_bytes=10)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"stream": ""}, "stream must be a non-empty string"),
    ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
    ({"block_ms": 0}, "block_ms must be at least 1, got 0"),
    ({"claim_idle_s": 0}, "claim_idle_s must be positive, got 0"),
    ({"max_deliveries": 0}, "max_deliveries must be at least 1, got 0"),
    ({"start_id": "5"}, "start_id must be '\\$' or '0', got '5'"),
    ({"dead_letter_stream": "k"}, "dead_letter_stream must differ from stream"),
    ({"url": "http://example.com"}, "url is not a Redis URL"),
])
def test_bad_parameters_are_refused_in_one_sentence(kwargs: dict[str, Any], message: str) -> None:
    pytest.importorskip("redis", reason="the redis package is not installed")
    arguments: dict[str, Any] = {"url": REDIS_URL, "stream": "k"} | kwargs
    url = arguments.pop("url")
    with pytest.raises(ValueError, match=message):
        RedisStreamSource("s", url, **arguments)
