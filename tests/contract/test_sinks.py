"""One contract for every alert sink (``adapters.sinks.base``): the webhook, against a real
local HTTP server, and the JSON-lines file.

Each case builds a sink whose receiver works, one whose receiver fails part-way (the webhook's
answers 503 from the third request on; the file is rotated away and its name taken by a
directory), and one that cannot be
reached at all, and reads back what the receiver durably holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from adapters.sinks import FAILURE_REASONS, Delivery, JsonlSink, Sink, WebhookSink
from tests.webhook_receiver import Receiver

SECRET = b"contract-secret-7f3a"


@dataclass
class SinkCase:
    """A sink under test and a view of what its receiver durably holds."""

    make: Callable[[], Sink]
    make_failing_after_two: Callable[[], Sink]
    make_unreachable: Callable[[], Sink]
    received: Callable[[], list[str]]


def deliveries(n: int, start: int = 0) -> list[Delivery]:
    when = datetime(2026, 12, 1, tzinfo=UTC)
    return [Delivery(delivery_id=f"d-{i}", event_type="incident",
                     payload={"id": i, "kind": "attack", "note": "línea\nwith newline"},
                     created_at=when) for i in range(start, start + n)]


def _webhook_case(tmp_path: Path) -> Iterator[SinkCase]:
    healthy = Receiver().start()
    answered = {"count": 0}

    def fail_from_third(_headers: dict[str, str], _body: bytes) -> tuple[int, dict[str, str],
                                                                          bytes]:
        answered["count"] += 1
        return (200, {}, b"ok") if answered["count"] <= 2 else (503, {}, b"busy")

    flaky = Receiver(respond=fail_from_third).start()
    down = Receiver()  # never started: connections are refused
    receivers = [healthy, flaky]

    def make(receiver: Receiver) -> Callable[[], Sink]:
        return lambda: WebhookSink("hook", receiver.url, secret=SECRET, timeout_s=5)

    def received() -> list[str]:
        return [r.delivery_id for receiver in receivers for r in receiver.accepted()]

    yield SinkCase(make(healthy), make(flaky), make(down), received)
    for receiver in receivers:
        receiver.stop()


def _jsonl_case(tmp_path: Path) -> Iterator[SinkCase]:
    good = tmp_path / "alerts.jsonl"
    doomed = tmp_path / "doomed.jsonl"
    rotated = tmp_path / "doomed.jsonl.1"

    class FailingAfterTwo(JsonlSink):
        """Writes its first two lines; then the file is rotated away and a directory takes
        its name, so nothing more can be written there."""

        def send(self, batch, **kwargs):  # type: ignore[no-untyped-def]
            first = super().send(batch[:2], **kwargs)
            if len(batch) <= 2 or first.failure is not None:
                return first
            doomed.rename(rotated)
            doomed.mkdir()
            rest = super().send(batch[2:], **kwargs)
            return type(first)(first.delivered + rest.delivered, rest.failure)

    def received() -> list[str]:
        ids = []
        for path in (good, rotated, doomed):
            if path.is_file():
                ids += [orjson.loads(line)["delivery_id"]
                        for line in path.read_bytes().splitlines()]
        return ids

    yield SinkCase(lambda: JsonlSink("file", good), lambda: FailingAfterTwo("file", doomed),
                   lambda: JsonlSink("file", tmp_path / "missing-dir" / "alerts.jsonl"),
                   received)


@pytest.fixture(params=["webhook", "jsonl"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SinkCase]:
    factory = _webhook_case if request.param == "webhook" else _jsonl_case
    yield from factory(tmp_path)


def test_every_sink_implements_the_protocol(case: SinkCase) -> None:
    sink = case.make()
    assert isinstance(sink, Sink)
    assert sink.batch_limit >= 1
    sink.close()


def test_deliveries_arrive_in_order_and_are_all_reported(case: SinkCase) -> None:
    sink = case.make()
    batch = deliveries(5)

    result = sink.send(batch)

    assert result.failure is None
    assert result.delivered == tuple(d.delivery_id for d in batch)
    assert case.received() == list(result.delivered)
    sink.close()


def test_a_failure_stops_the_batch_and_names_the_first_delivery_not_taken(
        case: SinkCase) -> None:
    sink = case.make_failing_after_two()
    batch = deliveries(5)

    result = sink.send(batch)

    assert result.failure is not None and result.failure.reason in FAILURE_REASONS
    taken = len(result.delivered)
    assert result.delivered == tuple(d.delivery_id for d in batch[:taken])
    assert result.failure.delivery_id == batch[taken].delivery_id
    # What the receiver holds is exactly what was reported: nothing after the failure.
    assert case.received() == list(result.delivered)
    sink.close()


def test_an_unreachable_receiver_is_a_failure_never_an_exception(case: SinkCase) -> None:
    sink = case.make_unreachable()

    result = sink.send(deliveries(3))

    assert result.delivered == ()
    assert result.failure is not None and result.failure.delivery_id == "d-0"
    assert result.failure.reason in ("connection", "io_error")
    assert not result.failure.refused
    sink.close()


def test_nothing_is_sent_when_asked_to_stop(case: SinkCase) -> None:
    sink = case.make()

    result = sink.send(deliveries(3), should_stop=lambda: True)

    assert result == type(result)()
    assert case.received() == []
    sink.close()


def test_a_redelivery_carries_the_same_delivery_id(case: SinkCase) -> None:
    sink = case.make()
    batch = deliveries(2)

    sink.send(batch)
    sink.send(batch[1:])

    assert case.received() == ["d-0", "d-1", "d-1"]  # the receiver can drop the second d-1
    sink.close()


def test_close_is_idempotent_and_reopen_keeps_delivering(case: SinkCase) -> None:
    sink = case.make()
    sink.send(deliveries(1))
    sink.reopen()
    assert sink.send(deliveries(1, start=1)).delivered == ("d-1",)
    sink.close()
    sink.close()


def test_a_failure_names_no_secret(case: SinkCase) -> None:
    sink = case.make_unreachable()
    failure = sink.send(deliveries(1)).failure
    assert failure is not None
    assert SECRET.decode() not in failure.detail and "\n" not in failure.detail
    assert SECRET.decode() not in repr(sink)
    sink.close()
