"""The MQTT source without a broker: offset keys, topic filters, URLs, configuration, and how
deliveries become batches (a stand-in session replays what paho would hand over).

Behaviour against a real Mosquitto is in tests/integration/test_mqtt_source.py and the source
contract suite.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters._mqtt_keys import MAX_KEY_CHARS, content_key, id_key, key_digest
from adapters._mqtt_session import BrokerAddress, Delivery
from adapters._outage import Outage
from adapters.base import SourceError
from adapters.mqtt import MqttSource, topic_filter_error
from agent.config import ConfigError, MqttSourceConfig, load_config, mqtt_source_errors
from agent.service import build_source

pytest.importorskip("paho.mqtt.client", reason="the paho-mqtt package is not installed")


# --- offset keys -------------------------------------------------------------------------


def test_content_keys_are_stable_and_tell_topics_and_payloads_apart() -> None:
    key = content_key("plant/1", b'{"t": 1}')
    assert key == content_key("plant/1", b'{"t": 1}')
    assert key.startswith("plant/1#sha256=")
    assert len({key, content_key("plant/2", b'{"t": 1}'), content_key("plant/1", b'{"t": 2}'),
                content_key("plant/1#", b'{"t": 1}')}) == 4


def test_id_keys_take_strings_and_integers_only() -> None:
    assert id_key("a/b", 7) == "a/b#id=7"
    assert id_key("a/b", "7") == 'a/b#id="7"'
    assert id_key("a/b", 7) != id_key("a/b", "7")
    for value in (None, True, 1.5, [1], {"a": 1}):
        assert id_key("a/b", value) is None


def test_long_keys_are_shortened_to_what_the_store_keeps() -> None:
    long_topic = "t/" + "x" * 400
    first, second = content_key(long_topic, b"1"), content_key(long_topic, b"2")
    assert len(first) <= MAX_KEY_CHARS and len(second) <= MAX_KEY_CHARS
    assert first != second
    assert len(id_key("t", "y" * 400) or "") <= MAX_KEY_CHARS
    assert len(key_digest(first)) == 16


# --- topic filters and URLs --------------------------------------------------------------


@pytest.mark.parametrize("topic", ["a", "a/b", "+/b", "a/+/c", "#", "a/#", "/a", "$SYS/#"])
def test_valid_topic_filters(topic: str) -> None:
    assert topic_filter_error(topic) is None


@pytest.mark.parametrize("topic", ["", "a/#/b", "a#", "a/b+", "+a", "a\0b"])
def test_invalid_topic_filters(topic: str) -> None:
    assert topic_filter_error(topic)


def test_broker_urls() -> None:
    assert BrokerAddress.parse("mqtt://h") == BrokerAddress("h", 1883, False)
    assert BrokerAddress.parse("mqtts://h").port == 8883
    address = BrokerAddress.parse("mqtt://u:p%3Aw@h:1")
    assert (address.username, address.password) == ("u", "p:w")
    assert "p:w" not in address.shown()
    for bad in ("redis://h", "mqtt://", "mqtt://h:99999", "mqtt://h/topic", "h:1883"):
        with pytest.raises(ValueError):
            BrokerAddress.parse(bad)


def test_constructor_checks_its_arguments() -> None:
    ok: dict[str, Any] = {"topics": ["a/#"], "client_id": "c"}
    changes: dict[str, Any]
    for changes in ({"topics": []}, {"topics": ["a/#/b"]}, {"client_id": ""},
                    {"client_id": "a b"}, {"max_buffered": 0}, {"max_buffered": 70_000},
                    {"format": "csv"}, {"format": "xml"}, {"session_expiry_s": -1},
                    {"id_field": ""}):
        with pytest.raises(ValueError):
            MqttSource("s", "mqtt://127.0.0.1:1", **(ok | changes))
    with pytest.raises(ValueError, match="MQTT URL|mqtt://"):
        MqttSource("s", "http://127.0.0.1", **ok)


def test_a_position_of_another_kind_is_refused_before_connecting() -> None:
    source = MqttSource("s", "mqtt://127.0.0.1:1", topics=["a/#"], client_id="c")
    with pytest.raises(SourceError, match="not an MQTT position"):
        source.open({"stream": "x", "ids": ["1-0"]})
    source.close()


# --- deliveries to batches ---------------------------------------------------------------


class StubSession:
    """Stands in for `MqttSession`: hands over prepared deliveries and records PUBACKs."""

    def __init__(self) -> None:
        self.generation = 1
        self.pending: list[Delivery] = []
        self.acked: list[tuple[int, int]] = []
        self.buffered = 0
        self.outage = Outage("stub")
        self.sessions_lost = 0
        self.session_present = True
        self.expect_session = False

    def start(self, wait_s: float) -> bool:
        return True

    def take(self, count: int, timeout_s: float) -> list[Delivery]:
        taken, self.pending = self.pending[:count], self.pending[count:]
        return taken

    def ack(self, delivery: Delivery) -> bool:
        if delivery.generation != self.generation:
            return False
        self.acked.append((delivery.generation, delivery.mid))
        return True

    def deliver(self, *payloads: bytes, topic: str = "t/a", mid: int = 1, dup: bool = False
                ) -> None:
        self.pending += [Delivery(self.generation, mid + i, topic, p, dup, 1)
                         for i, p in enumerate(payloads)]


def opened(**kwargs: Any) -> tuple[MqttSource, StubSession]:
    source = MqttSource("s", "mqtt://127.0.0.1:1", topics=["t/#"], client_id="c", **kwargs)
    stub = StubSession()
    source._session = stub  # type: ignore[assignment]
    source._opened = True
    return source, stub


def test_a_message_sent_again_while_its_batch_is_judged_joins_that_batch() -> None:
    source, session = opened()
    session.deliver(b'{"n": 1}', b'{"n": 2}', mid=1)
    batch = source.fetch(10, 0)
    session.generation = 2  # reconnected: the broker sends both again
    session.deliver(b'{"n": 1}', b'{"n": 2}', mid=1, dup=True)
    assert source.fetch(10, 0).records == ()
    source.ack(batch)
    assert session.acked == [(2, 1), (2, 2)], "acknowledged once, on the current connection"
    assert source.stream_stats.redelivered == 2


def test_a_committed_message_sent_again_is_acknowledged_not_judged() -> None:
    source, session = opened()
    session.deliver(b'{"n": 1}', mid=1)
    first = source.fetch(10, 0)
    source.ack(first)
    session.generation = 2
    session.deliver(b'{"n": 1}', b'{"n": 3}', mid=5, dup=True)
    again = source.fetch(10, 0)
    assert [r.fields for r in again.records] == [{"n": 3}]
    assert (2, 5) in session.acked


def test_the_position_lets_a_restarted_source_skip_what_was_committed() -> None:
    source, session = opened()
    session.deliver(b'{"n": 1}', b'{"n": 2}')
    batch = source.fetch(10, 0)
    restarted, stub = opened()
    restarted._opened = False
    restarted.open(batch.position)
    stub.deliver(b'{"n": 1}', b'{"n": 2}', b'{"n": 3}', dup=True)
    assert [r.fields for r in restarted.fetch(10, 0).records] == [{"n": 3}]


def test_messages_of_a_lost_connection_are_dropped_for_their_resending() -> None:
    source, session = opened()
    session.deliver(b'{"n": 1}')
    session.generation = 2
    assert source.fetch(10, 0).records == ()


def test_positions_stay_bounded() -> None:
    source, session = opened(max_buffered=5)
    for n in range(50):
        session.deliver(b'{"n": %d}' % n, mid=n + 1)
        batch = source.fetch(10, 0)
        source.ack(batch)
    assert batch.position is not None
    assert len(batch.position["committed"]) <= 2 * 5 + 1


def test_bad_payloads_become_error_records_keyed_by_content() -> None:
    source, session = opened(id_field="id")
    session.deliver(b'{"id": 4}', b"[1, 2]", b"\xff", b"", b'{"id": 4.5}')
    records = source.fetch(10, 0).records
    assert [r.error for r in records] == [None, "not_object", "decode", "blank", None]
    assert records[0].offset_key == "t/a#id=4"
    assert all("#sha256=" in r.offset_key for r in records[1:])


# --- configuration -----------------------------------------------------------------------


def test_config_reads_an_mqtt_source() -> None:
    spec = MqttSourceConfig.model_validate({
        "type": "mqtt", "name": "telemetry", "url": "mqtt://u:${MQTT_PASSWORD}@broker:1883",
        "topics": ["plant/+/telemetry"], "client_id": "agent-1", "format": "jsonl"})
    assert spec.format == "json" and spec.qos == 1 and spec.max_buffered == 1000


@pytest.mark.parametrize("changes", [{"url": "redis://h"}, {"topics": []},
                                     {"topics": ["a/#/b"]}, {"qos": 0}, {"client_id": "a b"},
                                     {"max_buffered": 0}, {"unknown": 1}])
def test_config_refuses_bad_mqtt_settings(changes: dict[str, Any]) -> None:
    base = {"type": "mqtt", "name": "t", "url": "mqtt://h", "topics": ["a/#"], "client_id": "c"}
    with pytest.raises(ValueError):
        MqttSourceConfig.model_validate(base | changes)


def test_environment_checks_name_the_missing_secret_and_the_source_gets_it(
        write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MQTT_TEST_PASSWORD", raising=False)
    entry = {"type": "mqtt", "name": "telemetry", "url": "mqtt://u:${MQTT_TEST_PASSWORD}@h:1883",
             "topics": ["plant/#"], "client_id": "agent-1"}
    path = write_config(sources=[entry])
    with pytest.raises(ConfigError) as caught:
        load_config(path, need_token=False)
    assert caught.value.errors == [
        "sources[0].url: environment variable MQTT_TEST_PASSWORD is not set (expected a secret)"]
    monkeypatch.setenv("MQTT_TEST_PASSWORD", "s3:cret")
    config = load_config(path, need_token=False)
    assert mqtt_source_errors(config) == []
    assert "s3:cret" not in json.dumps(config.redacted_summary())
    source = build_source(config, config.sources[0])
    assert isinstance(source, MqttSource)
    assert source._session.address.password == "s3:cret"
    assert source.topics == ("plant/#",) and source.client_id == "agent-1"
    source.close()


def test_csv_messages_need_schema_columns(write_config: Callable[..., Path]) -> None:
    entry = {"type": "mqtt", "name": "telemetry", "url": "mqtt://h", "topics": ["a/#"],
             "client_id": "c", "format": "csv"}
    path = write_config(sources=[entry], **{"schema.columns": None})
    with pytest.raises(ConfigError, match=r"sources\[0\]\.format: csv messages have no header"):
        load_config(path, need_token=False)


def test_lost_sessions_are_exported_as_a_counter_that_never_goes_back() -> None:
    from adapters.base import StreamStats
    from agent.metrics import Metrics

    metrics = Metrics()

    def lost() -> float | None:
        return metrics.registry.get_sample_value("metasentry_source_sessions_lost_total",
                                                 {"source": "telemetry"})

    metrics.observe_stream("telemetry", lambda: StreamStats(sessions_lost=0))
    assert lost() == 0
    metrics.observe_stream("telemetry", lambda: StreamStats(sessions_lost=2))
    # the health thread again
    metrics.observe_stream("telemetry", lambda: StreamStats(sessions_lost=2))
    assert lost() == 2
    # a source started afresh
    metrics.observe_stream("telemetry", lambda: StreamStats(sessions_lost=1))
    assert lost() == 3
