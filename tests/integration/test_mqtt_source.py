"""The MQTT source against a real Mosquitto: flow control, redelivery after a lost connection,
committed messages sent again, offset keys, retained and QoS 0 messages, a lost session.

Every test uses a client id and topics of its own on the shared broker (METASENTRY_TEST_MQTT_URL,
default 127.0.0.1:1883) and deletes its session afterwards; without a broker it is skipped.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from pg_faults import Relay

from adapters.base import Batch
from adapters.mqtt import MqttSource
from tests import mqtt_broker


@dataclass
class Names:
    client_id: str
    topic: str
    sources: list[MqttSource] = field(default_factory=list)

    def source(self, *, url: str = mqtt_broker.MQTT_URL, **kwargs: object) -> MqttSource:
        options: dict[str, object] = {"topics": [f"{self.topic}/#"], "client_id": self.client_id,
                                      "connect_timeout_s": 3.0, "max_backoff_s": 0.5}
        source = MqttSource("telemetry", url, **(options | kwargs))  # type: ignore[arg-type]
        self.sources.append(source)
        return source


@pytest.fixture
def names() -> Iterator[Names]:
    mqtt_broker.require_broker()
    made = Names(mqtt_broker.new_name("metasentry-it"),
                 "metasentry/test/" + mqtt_broker.new_name("it"))
    mqtt_broker.prepare_session(made.client_id, [f"{made.topic}/#"])
    yield made
    for source in made.sources:
        source.close()
    mqtt_broker.drop_session(made.client_id)


def payloads(count: int, start: int = 0) -> list[bytes]:
    return [b'{"seq": %d, "temp": %d.5}' % (i, 20 + i % 5) for i in range(start, start + count)]


def drain(source: MqttSource, *, ack: bool = True, quiet_s: float = 0.3,
          max_records: int = 100) -> list[Batch]:
    """Fetch (and acknowledge) until nothing arrives for ``quiet_s``."""
    batches: list[Batch] = []
    while True:
        batch = source.fetch(max_records, quiet_s)
        if not batch.records:
            return batches
        batches.append(batch)
        if ack:
            source.ack(batch)


def seqs(batches: list[Batch]) -> list[int]:
    return [int(r.fields["seq"]) for b in batches for r in b.records if r.fields is not None]


def wait_for(predicate: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_at_most_max_buffered_messages_are_held(names: Names) -> None:
    """The broker sends no more than max_buffered unacknowledged messages: memory stays
    bounded however far the pipeline falls behind, and nothing is lost or reordered."""
    mqtt_broker.publish(f"{names.topic}/a", payloads(40))
    source = names.source(max_buffered=8)
    source.open(None)
    first = source.fetch(100, 1.0)
    time.sleep(0.3)  # time for the broker to send more, if it would
    more = source.fetch(100, 0.2)
    assert len(first.records) + len(more.records) == 8
    assert source.unacknowledged == 8
    source.ack(more if more.records else first)  # acknowledges every batch before it too
    rest = drain(source)
    assert seqs([first, more, *rest]) == list(range(40))
    assert source.stream_stats.read == source.stream_stats.acked == 40


def test_messages_of_a_lost_connection_are_sent_again_and_judged_once(names: Names) -> None:
    """A connection cut while a batch is being judged: the broker sends its messages again;
    they join the batch (not judged twice) and its acknowledgement covers them."""
    relay = Relay(mqtt_broker.MQTT_TARGET)
    relay.up()
    try:
        mqtt_broker.publish(f"{names.topic}/a", payloads(30))
        source = names.source(url=f"mqtt://127.0.0.1:{relay.port}", max_buffered=10)
        source.open(None)
        judged = source.fetch(10, 1.0)
        assert len(judged.records) == 10
        relay.down()
        wait_for(lambda: not source.reachable)
        assert source.stream_stats.reachable is False
        relay.up()
        wait_for(lambda: source.reachable)
        assert source.fetch(100, 0.5).records == (), "the re-sent messages are being judged"
        source.ack(judged)  # committed: acknowledged on the new connection
        rest = drain(source)
        assert seqs([judged, *rest]) == list(range(30))
        assert source.stream_stats.redelivered == 10
    finally:
        relay.down()
    source.close()
    again = names.source()
    again.open(None)
    assert drain(again) == [], "every message was acknowledged"


def test_committed_messages_sent_again_are_acknowledged_not_judged(names: Names) -> None:
    """The agent died between the commit and the acknowledgement: the position names the
    committed keys, and their redelivery is acknowledged without being judged."""
    mqtt_broker.publish(f"{names.topic}/a", payloads(12))
    source = names.source()
    source.open(None)
    committed = source.fetch(5, 1.0)
    source.close()  # no acknowledgement: as if the process had died after the commit
    restarted = names.source()
    restarted.open(committed.position)
    rest = drain(restarted)
    assert seqs(rest) == list(range(5, 12))
    assert restarted.stream_stats.redelivered == 5
    assert restarted.stream_stats.acked == 12
    restarted.close()
    third = names.source()
    third.open(None)
    assert drain(third) == []


def test_offset_keys_come_from_id_field_else_from_content(names: Names) -> None:
    mqtt_broker.publish(f"{names.topic}/dev1",
                        [b'{"seq": 7, "v": 1}', b'{"v": 2}', b"not json", b'{"seq": 1.5}'])
    source = names.source(id_field="seq")
    source.open(None)
    records = [r for b in drain(source) for r in b.records]
    keys = [r.offset_key for r in records]
    assert keys[0] == f"{names.topic}/dev1#id=7"
    assert all(k.startswith(f"{names.topic}/dev1#sha256=") for k in keys[1:])
    assert [r.error for r in records] == [None, None, "not_json", None]


def test_retained_messages_arrive_once_and_qos0_needs_no_acknowledgement(
        names: Names) -> None:
    """A retained message is sent when the session first subscribes, never again on a
    resumed one; a QoS 0 message is judged like any other (and cannot be sent again)."""
    mqtt_broker.drop_session(names.client_id)
    names.client_id = mqtt_broker.new_name("metasentry-it")  # a session that does not exist yet
    retained_topic = f"{names.topic}/state"
    mqtt_broker.publish(retained_topic, [b'{"seq": 100}'], retain=True)
    try:
        source = names.source()
        source.open(None)
        mqtt_broker.publish(f"{names.topic}/fast", [b'{"seq": 1}'], qos=0)
        assert seqs(drain(source)) == [100, 1]
        source.close()
        again = names.source()
        again.open({"client_id": names.client_id, "committed": []})
        assert drain(again) == [], "a resumed subscription does not send retained messages"
        assert again.sessions_lost == 0
    finally:
        mqtt_broker.publish(retained_topic, [b""], retain=True)  # delete the retained message


def test_a_session_the_broker_lost_is_reported(names: Names,
                                               caplog: pytest.LogCaptureFixture) -> None:
    source = names.source()
    source.open(None)
    source.close()
    mqtt_broker.drop_session(names.client_id)
    with caplog.at_level(logging.WARNING, logger="adapters"):
        resumed = names.source()
        resumed.open({"client_id": names.client_id, "committed": []})
    assert resumed.sessions_lost == 1
    assert any("holds no session" in r.getMessage() for r in caplog.records)


def test_an_unreachable_broker_is_retried_in_the_background() -> None:
    mqtt_broker.require_broker()
    port = mqtt_broker.free_port()
    source = MqttSource("telemetry", f"mqtt://127.0.0.1:{port}", topics=["x/#"],
                        client_id=mqtt_broker.new_name(), connect_timeout_s=0.5,
                        max_backoff_s=0.5)
    started = time.monotonic()
    source.open(None)
    assert source.fetch(10, 0.2).records == ()
    assert time.monotonic() - started < 3
    assert source.reachable is False
    source.close()


def test_a_process_holding_over_a_thousand_files_still_reads(names: Names) -> None:
    """A socket numbered 1024 or higher (a busy agent holds that many files and sockets) is
    one ``select()`` cannot watch: the source must connect, read and acknowledge anyway."""
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        mqtt_broker.publish(f"{names.topic}/a", payloads(20))
        source = names.source()
        source.open(None)
        assert seqs(drain(source)) == list(range(20))
        assert source.stream_stats.acked == 20
    finally:
        for descriptor in held:
            os.close(descriptor)
