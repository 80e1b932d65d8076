"""The HTTP ingest queue: all-or-nothing admission, backpressure, commit tickets, idempotency."""

from __future__ import annotations

import doctest
import threading

import pytest

import adapters.http_ingest as http_ingest
from adapters.base import Source
from adapters.http_ingest import (
    HttpIngestSource,
    IngestClosed,
    KeyConflict,
    NotAnArray,
    QueueFull,
    TooLarge,
    parse_json_array,
    parse_ndjson,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def records(key: str, n: int) -> list[http_ingest.RawRecord]:
    body = b"".join(b'{"i": %d}\n' % i for i in range(n))
    return parse_ndjson(body, key, 1000)


def opened(**kwargs: object) -> HttpIngestSource:
    source = HttpIngestSource("http", **kwargs)  # type: ignore[arg-type]
    source.open(None)
    return source


def test_docstring_examples_run() -> None:
    assert doctest.testmod(http_ingest).failed == 0


def test_is_a_source() -> None:
    assert isinstance(HttpIngestSource("http"), Source)


def test_ndjson_indices_are_line_numbers_and_bad_lines_become_error_records() -> None:
    body = b'\xef\xbb\xbf{"a": 1}\r\n\n[1]\n{"a": \xff}\n' + b'{"a": "' + b"x" * 200 + b'"}'
    got = [(r.offset_key, r.error) for r in parse_ndjson(body, "req", 100)]
    assert got == [("req:0", None), ("req:2", "not_object"), ("req:3", "decode"),
                   ("req:4", "oversize")]


def test_json_array_elements_become_records() -> None:
    got = parse_json_array(b'[{"a": 1}, "x", {"b": "' + b"y" * 200 + b'"}]', "k", 100)
    assert [(r.offset_key, r.error) for r in got] == [
        ("k:0", None), ("k:1", "not_object"), ("k:2", "oversize")]
    assert got[0].fields == {"a": 1}


@pytest.mark.parametrize("body", [b"", b"{", b'{"a": 1}', b"7"])
def test_a_json_body_that_is_not_an_array_is_refused_whole(body: bytes) -> None:
    with pytest.raises(NotAnArray):
        parse_json_array(body, "k", 100)


def test_a_request_is_committed_only_when_every_batch_holding_it_is_acked() -> None:
    source = opened()
    ticket = source.submit("a", "d", records("a", 5))
    first = source.fetch(3, 0)
    second = source.fetch(3, 0)
    assert [len(first.records), len(second.records)] == [3, 2]
    source.ack(first)
    assert not ticket.committed
    source.ack(second)
    assert ticket.committed and ticket.wait(0)


def test_acking_a_later_batch_settles_the_earlier_ones_too() -> None:
    source = opened()
    a = source.submit("a", "d", records("a", 2))
    b = source.submit("b", "d", records("b", 2))
    first = source.fetch(2, 0)
    second = source.fetch(2, 0)
    source.ack(second)
    assert a.committed and b.committed
    source.ack(first)  # already settled: nothing happens twice
    assert source.lag == 0


def test_one_batch_may_hold_records_of_several_requests() -> None:
    source = opened()
    tickets = [source.submit(k, "d", records(k, 2)) for k in "abc"]
    batch = source.fetch(10, 0)
    assert [r.offset_key for r in batch.records] == ["a:0", "a:1", "b:0", "b:1", "c:0", "c:1"]
    assert batch.position is None and not batch.textual
    source.ack(batch)
    assert all(t.committed for t in tickets)


def test_a_full_queue_refuses_the_whole_request_and_frees_up_once_fetched() -> None:
    source = opened(max_queue_records=5)
    source.submit("a", "d", records("a", 4))
    with pytest.raises(QueueFull) as refused:
        source.submit("b", "d", records("b", 2))
    assert refused.value.retry_after_s >= 1
    assert source.lag == 4 and source.ticket("b") is None  # nothing of b was queued
    source.fetch(10, 0)
    assert source.submit("b", "d", records("b", 2)).count == 2


def test_the_byte_bound_holds_as_well() -> None:
    one = records("a", 1)
    source = opened(max_queue_bytes=len(one[0].raw) * 2)
    source.submit("a", "d", one)
    source.submit("b", "d", records("b", 1))
    with pytest.raises(QueueFull):
        source.submit("c", "d", records("c", 1))
    assert source.queued_bytes == 2 * len(one[0].raw)
    source.fetch(1, 0)
    assert source.queued_bytes == len(one[0].raw)


def test_a_request_larger_than_the_whole_queue_is_too_large_not_throttled() -> None:
    source = opened(max_queue_records=3)
    with pytest.raises(TooLarge):
        source.submit("a", "d", records("a", 4))


def test_retry_after_follows_the_drain_rate() -> None:
    clock = Clock()
    source = opened(max_queue_records=1000, clock=clock)
    assert source.retry_after_s() == http_ingest.UNKNOWN_RATE_RETRY_AFTER_S
    for i in range(10):  # 100 records committed per second for 10 s
        source.submit(f"k{i}", "d", records(f"k{i}", 100))
        source.ack(source.fetch(1000, 0))
        clock.now += 1
    source.submit("queued", "d", records("queued", 900))
    assert source.retry_after_s() == 9  # 900 waiting at 100 per second
    with pytest.raises(QueueFull) as refused:
        source.submit("more", "d", records("more", 200))
    assert refused.value.retry_after_s == 9
    clock.now += 3600  # nothing drained for an hour: no rate to go by
    assert source.retry_after_s() == http_ingest.UNKNOWN_RATE_RETRY_AFTER_S


def test_retry_after_is_capped() -> None:
    clock = Clock()
    source = opened(max_queue_records=100_000, clock=clock)
    source.submit("slow", "d", records("slow", 1))
    source.ack(source.fetch(10, 0))
    clock.now += 20
    source.submit("big", "d", records("big", 5000))
    assert source.retry_after_s() == http_ingest.MAX_RETRY_AFTER_S


def test_a_known_key_returns_the_first_ticket_and_queues_nothing() -> None:
    source = opened()
    first = source.submit("key", "d1", records("key", 3), report="first")
    assert source.submit("key", "d1", records("key", 3), report="second") is first
    assert source.lag == 3
    source.ack(source.fetch(10, 0))
    again = source.submit("key", "d1", records("key", 3))
    assert again is first and again.report == "first" and source.lag == 0


def test_a_known_key_with_another_body_conflicts() -> None:
    source = opened()
    source.submit("key", "d1", records("key", 1))
    with pytest.raises(KeyConflict):
        source.submit("key", "d2", records("key", 1))


def test_committed_keys_are_remembered_up_to_the_bound() -> None:
    source = opened(remember_keys=2)
    for key in "abc":
        source.submit(key, "d", records(key, 1))
        source.ack(source.fetch(10, 0))
    assert source.ticket("a") is None
    assert source.ticket("b") is not None and source.ticket("c") is not None


def test_an_empty_request_is_committed_at_once() -> None:
    source = opened()
    assert source.submit("e", "d", []).committed


def test_fetch_waits_for_a_submission() -> None:
    source = opened()
    timer = threading.Timer(0.05, lambda: source.submit("late", "d", records("late", 1)))
    timer.start()
    batch = source.fetch(10, 5)
    timer.join()
    assert [r.offset_key for r in batch.records] == ["late:0"]


def test_fetch_times_out_empty() -> None:
    assert opened().fetch(10, 0.01).records == ()


def test_close_abandons_waiting_requests_and_refuses_new_ones() -> None:
    source = opened()
    ticket = source.submit("a", "d", records("a", 2))
    seen: list[bool] = []
    ticket.on_done(lambda t: seen.append(t.committed))
    source.close()
    assert ticket.abandoned and seen == [False]
    assert not source.accepting
    with pytest.raises(IngestClosed):
        source.submit("b", "d", records("b", 1))


def test_submitting_before_open_is_refused() -> None:
    with pytest.raises(IngestClosed):
        HttpIngestSource("http").submit("a", "d", records("a", 1))


def test_a_failing_callback_does_not_break_the_ack() -> None:
    source = opened()
    ticket = source.submit("a", "d", records("a", 1))

    def broken(_ticket: object) -> None:
        raise RuntimeError("event loop closed")

    ticket.on_done(broken)
    source.ack(source.fetch(10, 0))
    assert ticket.committed


def test_an_ack_of_an_unknown_batch_changes_nothing() -> None:
    source = opened()
    ticket = source.submit("a", "d", records("a", 1))
    source.fetch(10, 0)
    stranger = HttpIngestSource("http")
    stranger.open(None)
    stranger.submit("x", "d", records("x", 1))
    source.ack(stranger.fetch(10, 0))
    assert not ticket.committed


@pytest.mark.parametrize("kwargs", [{"max_queue_records": 0}, {"max_queue_bytes": 0},
                                    {"remember_keys": -1}])
def test_bad_bounds_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        HttpIngestSource("http", **kwargs)  # type: ignore[arg-type]
