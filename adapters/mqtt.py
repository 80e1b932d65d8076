"""Records from MQTT topics (IoT telemetry), read at least once through a persistent session.

The agent subscribes with QoS 1 under a fixed client id, in an MQTT 5 session the broker keeps
for ``session_expiry_s`` after a disconnection (``clean_start`` false). What makes it safe:

* **Acknowledged after the commit.** paho runs with manual acknowledgement: the PUBACK of a
  message is sent only from `MqttSource.ack`, which the pipeline calls after the store
  committed the batch holding it. Until then the broker keeps the message in the session and
  sends it again on the next connection, so a crash (even ``kill -9``) loses nothing.
* **Delivered again, judged once.** A message whose offset key belongs to a batch being judged
  right now joins that batch's acknowledgement; one whose key belongs to a batch committed
  already is acknowledged without being judged again. The DUP flag is not relied on: after a
  restart Mosquitto sends messages it restored from disk with or without it. Any other
  message is judged, and the store's keys keep its rows single.
  A PUBACK is only queued for paho's network thread, and one still queued, in a socket, or
  unread by a broker that stops, never counts, so not only the last batch may come back. The
  source remembers digests of the last ``max(16 * max_buffered, 16384)`` committed keys
  across reconnections, and the committed position lists the last ``2 * max_buffered`` of them
  across restarts of the agent (a broker honouring Receive Maximum holds no more than
  ``max_buffered`` unacknowledged messages at a time; one that does not, and is restarted
  while thousands of PUBACKs are in flight, may send older ones again: they are judged again,
  and the store's keys keep their rows single).
* **Bounded memory.** The session asks the broker (Receive Maximum) for at most
  ``max_buffered`` unacknowledged messages: buffered and handed out together. The broker
  queues the rest in the session, so a slow pipeline slows the broker's sending, not the heap.
* **Outages.** paho reconnects by itself with capped backoff and the session resumes;
  ``fetch`` returns empty batches meanwhile and ``reachable`` is false (one WARNING when the
  broker goes, one INFO when it is back). A broker that comes back without the session (it
  expired, or the broker lost it) is logged as a WARNING and counted in ``sessions_lost``.

Offset keys are built from the message itself (see `adapters._mqtt_keys`): the value of
``id_field`` when the record has one, else a digest of topic and payload. Positions are
``{"client_id", "committed"}`` (key digests, oldest first): the broker, not the position, says
where reading resumes. What MQTT
cannot guarantee (messages published at QoS 0, a broker that crashes before saving its
state, expired sessions, order across topics) is in docs/SOURCES.md.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any, Literal

from adapters._mqtt_keys import content_key, id_key, key_digest
from adapters._mqtt_session import MAX_RECEIVE, BrokerAddress, Delivery, MqttSession
from adapters.base import Batch, RawRecord, SourceError, StreamStats, check_fetch
from adapters.parsing import CsvParser, JsonlParser, parse_values

logger = logging.getLogger(__name__)

MqttFormat = Literal["json", "csv"]


@dataclass
class _Handout:
    """A batch given to the pipeline and not yet acknowledged, with every delivery of its
    records (a message sent again while the batch is judged joins it)."""

    batch: Batch
    keys: frozenset[str]
    digests: list[str]
    deliveries: list[Delivery] = field(default_factory=list)


class MqttSource:
    """Messages of MQTT topic filters, one record per message (a JSON object or a CSV line).

    Parameters
    ----------
    name:
        Name of the source, as in ``agent.yaml``; incidents and metrics carry it.
    url:
        ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://`` (TLS, system CAs); a secret.
    topics:
        Topic filters to subscribe to at QoS 1; ``+`` and ``#`` wildcards are allowed.
    client_id:
        The session's name at the broker. It must stay the same across restarts (the
        session, with what was queued for it, belongs to it) and must not be shared by two
        agents (the broker would disconnect one for the other, back and forth).
    id_field:
        Field of the record that identifies it (a sequence number, an event id); messages
        without it, and all messages when ``None``, are keyed by a digest of topic and payload.
    format, columns, delimiter:
        How payloads are written: a JSON object, or one CSV line whose cells ``columns`` name.
    session_expiry_s:
        How long the broker keeps the session while the agent is away.
    max_buffered:
        Most messages delivered and not yet acknowledged (1 to 65535).
    max_record_bytes:
        Larger payloads become ``"oversize"`` error records.
    keepalive_s, connect_timeout_s, max_backoff_s:
        MQTT keepalive, how long `open` waits for the broker (and the socket timeout), and
        the cap on the wait between reconnections.
    log_url:
        The URL as log lines show it; default: scheme, host and port only.

    Examples
    --------
    >>> source = MqttSource("telemetry", "mqtt://127.0.0.1:1883", topics=["plant/+/telemetry"],
    ...                     client_id="metasentry-doc")  # doctest: +SKIP
    >>> source.open(None)  # doctest: +SKIP
    >>> batch = source.fetch(max_records=10, timeout_s=1.0)  # doctest: +SKIP
    >>> source.ack(batch)  # after the store committed the batch  # doctest: +SKIP
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        topics: Sequence[str],
        client_id: str,
        id_field: str | None = None,
        format: MqttFormat = "json",
        columns: Sequence[str] | None = None,
        delimiter: str = ",",
        session_expiry_s: int = 7 * 86_400,
        max_buffered: int = 1000,
        max_record_bytes: int = 1_048_576,
        keepalive_s: int = 30,
        connect_timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
        log_url: str | None = None,
    ) -> None:
        if not name:
            raise ValueError("name must be a non-empty string.")
        if not client_id or any(c.isspace() for c in client_id):
            raise ValueError(f"client_id must be a non-empty string without spaces, "
                             f"got {client_id!r}.")
        topics = tuple(topics)
        if not topics:
            raise ValueError("topics must name at least one topic filter.")
        for topic in topics:
            problem = topic_filter_error(topic)
            if problem:
                raise ValueError(f"topic filter {topic!r} {problem}.")
        if id_field is not None and not id_field:
            raise ValueError("id_field must be a non-empty string or None.")
        if format not in ("json", "csv"):
            raise ValueError(f"format must be one of ['json', 'csv'], got {format!r}.")
        if format == "csv" and not columns:
            raise ValueError("format 'csv' needs columns to name the cells of each message.")
        if not 1 <= max_buffered <= MAX_RECEIVE:
            raise ValueError(f"max_buffered must be between 1 and {MAX_RECEIVE}, "
                             f"got {max_buffered}.")
        if not 0 <= session_expiry_s <= 0xFFFFFFFF:
            raise ValueError(f"session_expiry_s must be between 0 and {0xFFFFFFFF}, "
                             f"got {session_expiry_s}.")
        if max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be at least 1, got {max_record_bytes}.")
        if not connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s must be positive, got {connect_timeout_s}.")
        address = BrokerAddress.parse(url)
        self.name = name
        self.topics = topics
        self.client_id = client_id
        self.id_field = id_field
        self.max_buffered = max_buffered
        self.max_record_bytes = max_record_bytes
        self.connect_timeout_s = connect_timeout_s
        self._parser: JsonlParser | CsvParser = (
            CsvParser(columns=columns, header=False, delimiter=delimiter,
                      max_record_bytes=max_record_bytes)
            if format == "csv" else JsonlParser(max_record_bytes))
        self._shown_url = log_url if log_url is not None else address.shown()
        self._session = MqttSession(
            address, client_id=client_id, topics=topics, session_expiry_s=session_expiry_s,
            max_buffered=max_buffered, keepalive_s=keepalive_s,
            connect_timeout_s=connect_timeout_s, max_backoff_s=max_backoff_s,
            what=f"source {name!r}: MQTT broker at {self._shown_url}")
        self._opened = False
        self._closed = False
        self._handouts: list[_Handout] = []
        # Digests of committed keys, newest last: enough to recognise every message whose
        # acknowledgement may not have reached the broker (about max_buffered are pending).
        self._committed: OrderedDict[str, None] = OrderedDict()
        self._remember = max(16 * max_buffered, 16_384)  # across reconnections
        self._persist = 2 * max_buffered  # across restarts: in every committed position
        self._counts = dict.fromkeys(StreamStats.COUNTERS, 0)

    # --- state -----------------------------------------------------------------------------

    @property
    def lag(self) -> None:
        """``None``: the broker does not say how many messages it queues for the session."""
        return None

    @property
    def reachable(self) -> bool:
        """Whether the broker answered the last attempt (``True`` before the first)."""
        return not self._session.outage.down

    @property
    def sessions_lost(self) -> int:
        """Connections on which the broker had lost this agent's session."""
        return self._session.sessions_lost

    @property
    def unacknowledged(self) -> int:
        """Messages delivered and not yet acknowledged: buffered or being judged."""
        return self._session.buffered + sum(len(h.deliveries) for h in self._handouts)

    @property
    def stream_stats(self) -> StreamStats:
        """Reachability and this agent's counts, exported as ``metasentry_stream_*``; never
        waits for the broker, so the health thread may read it."""
        return StreamStats(reachable=self.reachable, pending=self.unacknowledged,
                           group_lag=None, sessions_lost=self.sessions_lost, **self._counts)

    # --- the source contract ----------------------------------------------------------------

    def open(self, position: Mapping[str, Any] | None) -> None:
        """Connect and subscribe, waiting up to ``connect_timeout_s`` for the broker.

        ``position`` (digests of the last committed keys) lets messages committed already, sent
        again because the agent stopped before acknowledging them, be acknowledged without
        being judged twice. An unreachable broker is retried in the background.

        Raises
        ------
        SourceError
            When ``position`` is not a position of an MQTT source.
        """
        if self._opened:
            raise RuntimeError(f"source {self.name!r} is already open.")
        if position is not None:
            digests = position.get("committed")
            if not isinstance(digests, list):
                raise SourceError(
                    f"source {self.name!r}: stored position {_shown(position)} is not an MQTT "
                    "position (no 'committed'); delete it to start over.")
            if position.get("client_id") == self.client_id:
                self._committed.update((d, None) for d in digests if isinstance(d, str))
        self._session.expect_session = position is not None
        self._opened = True
        if self._session.start(self.connect_timeout_s):
            logger.info("source %r: reading %s as client %r at %s (session %s)",
                        self.name, ", ".join(self.topics), self.client_id, self._shown_url,
                        "resumed" if self._session.session_present else "new")
        else:
            logger.warning("source %r: MQTT broker at %s has not answered within %gs; "
                           "connecting in the background", self.name, self._shown_url,
                           self.connect_timeout_s)

    def fetch(self, max_records: int, timeout_s: float) -> Batch:
        """Up to ``max_records`` records, waiting up to ``timeout_s`` for the first one.

        Returns an empty batch, never an error, while the broker is unreachable.
        """
        check_fetch(self.name, max_records, timeout_s, readable=self._opened and not self._closed)
        deadline = time.monotonic() + timeout_s
        while True:
            deliveries = self._session.take(max_records, max(0.0, deadline - time.monotonic()))
            batch = self._batch(deliveries)
            if batch is not None:
                return batch
            if time.monotonic() >= deadline:
                return Batch(self.name, (), None, self._parser.textual)

    def ack(self, batch: Batch) -> None:
        """Acknowledge ``batch`` and every batch handed out before it (they are committed).

        A message delivered on a connection that has since been lost cannot be acknowledged
        any more; the broker sends it again and it is recognised as committed then.
        """
        if batch.source != self.name:
            raise ValueError(f"batch from source {batch.source!r} acknowledged to {self.name!r}.")
        index = next((i for i, h in enumerate(self._handouts) if h.batch is batch), None)
        if index is None:
            return
        done, self._handouts = self._handouts[:index + 1], self._handouts[index + 1:]
        for handout in done:
            for delivery in handout.deliveries:
                if self._session.ack(delivery):
                    self._counts["acked"] += 1
            self._remember_committed(handout.digests)

    def close(self) -> None:
        """Disconnect; messages not acknowledged stay in the broker's session."""
        if self._closed:
            return
        self._closed = True
        if self._opened:
            self._session.stop()

    # --- from messages to a batch -----------------------------------------------------------

    def _batch(self, deliveries: list[Delivery]) -> Batch | None:
        generation = self._session.generation
        live = [d for d in deliveries if d.generation == generation]  # else: sent again
        if not live:
            return None
        self._counts["read"] += len(live)
        records = self._records(live)
        fresh: list[RawRecord] = []
        fresh_deliveries: list[Delivery] = []
        again = 0
        for delivery, record in zip(live, records, strict=True):
            if self._known(delivery, record.offset_key):
                again += 1
                continue
            fresh.append(record)
            fresh_deliveries.append(delivery)
        if again:
            self._counts["redelivered"] += again
            logger.info("source %r: %d messages sent again by the broker were judged already "
                        "or are being judged; not judging them twice", self.name, again)
        if not fresh:
            return None
        keys = [record.offset_key for record in fresh]
        digests = [key_digest(key) for key in keys]
        batch = Batch(self.name, tuple(fresh), self._position(digests), self._parser.textual)
        self._handouts.append(_Handout(batch, frozenset(keys), digests, fresh_deliveries))
        return batch

    def _records(self, deliveries: list[Delivery]) -> list[RawRecord]:
        """One record per message, keyed by `adapters._mqtt_keys`; never raises."""
        keys = [content_key(d.topic, d.payload) for d in deliveries]
        records = parse_values(self._parser, keys, [d.payload for d in deliveries],
                               self.max_record_bytes)
        if self.id_field is None:
            return records
        keyed = []
        for delivery, record in zip(deliveries, records, strict=True):
            key = None if record.fields is None else id_key(delivery.topic,
                                                             record.fields.get(self.id_field))
            keyed.append(record if key is None else record._replace(offset_key=key))
        return keyed

    def _known(self, delivery: Delivery, key: str) -> bool:
        """Whether a message is one being judged (it joins that batch's acknowledgement) or
        one committed (it is acknowledged now): a message sent again, by its key."""
        for handout in self._handouts:
            if key in handout.keys:
                handout.deliveries.append(delivery)
                return True
        if key_digest(key) in self._committed:
            if self._session.ack(delivery):
                self._counts["acked"] += 1
            return True
        return False

    def _position(self, digests: list[str]) -> dict[str, Any]:
        """What is committed with a batch: the keys known committed once it is, that is the
        remembered ones, those of batches handed out before it, and its own."""
        newest = list(islice(reversed(self._committed), self._persist))[::-1]
        recent = OrderedDict.fromkeys(newest)
        for digest in chain(*(h.digests for h in self._handouts), digests):
            recent[digest] = None
            recent.move_to_end(digest)
        committed = list(recent)
        return {"client_id": self.client_id,
                "committed": committed[-(self._persist + len(digests)):]}

    def _remember_committed(self, digests: list[str]) -> None:
        for digest in digests:
            self._committed[digest] = None
            self._committed.move_to_end(digest)
        while len(self._committed) > self._remember:
            self._committed.popitem(last=False)


def topic_filter_error(topic: str) -> str | None:
    """Why ``topic`` is not a valid MQTT topic filter, or ``None``.

    >>> topic_filter_error("plant/+/telemetry/#") is None
    True
    >>> topic_filter_error("plant/#/x")
    "has '#' somewhere other than alone in the last level"
    """
    if not topic:
        return "is empty"
    if "\0" in topic:
        return "holds a NUL character"
    if len(topic.encode()) > 65_535:
        return "is longer than 65535 bytes"
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return "has '#' somewhere other than alone in the last level"
        if "+" in level and level != "+":
            return "has '+' somewhere other than alone in a level"
    return None


def _shown(position: Mapping[str, Any]) -> str:
    """A stored position in an error message, cut short: it may list thousands of keys."""
    text = repr(dict(position))
    return text if len(text) <= 200 else text[:200] + "...}"
