"""One persistent MQTT session: the paho client, its reconnections, and the messages it holds.

The network thread (`adapters._mqtt_network.NetworkLoop`) connects, reconnects on the
`Outage` schedule, and has paho hand each message to ``on_message``; everything else in the
source runs on the pipeline's thread. This module is
the seam between the two. What it guarantees:

* **Flow control.** The session asks the broker (MQTT 5 *Receive Maximum*) never to have more
  than ``max_buffered`` messages delivered to it and unacknowledged. Buffered and handed-out
  messages both count, so memory is bounded by the broker itself; should a broker ignore the
  limit, ``on_message`` waits for room, which stops paho reading the socket (TCP backpressure).
* **Acknowledgements belong to a connection.** Each connection is a *generation*. A packet
  identifier is only meaningful on the connection that delivered it: after a reconnection the
  broker sends every unacknowledged message again (same identifier, DUP set) or, when it lost
  the session, reuses identifiers for new messages. `ack` therefore sends a PUBACK only for
  a message of the current connection, never while disconnected, and the caller matches
  re-sent messages to what it committed by their offset keys instead.
* **Messages of a lost connection are dropped** from the buffer when the next one starts: the
  broker sends them again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from adapters._mqtt_network import NetworkLoop
from adapters._outage import Outage
from adapters.base import SourceError

logger = logging.getLogger(__name__)

MAX_RECEIVE = 65_535
"""The largest Receive Maximum MQTT 5 can express."""


class Delivery(NamedTuple):
    """One message as paho handed it over."""

    generation: int
    mid: int
    topic: str
    payload: bytes
    dup: bool
    qos: int


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is and how to log in; ``password`` is a secret."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """``mqtt://[user[:password]@]host[:port]`` (1883) or ``mqtts://`` (TLS, 8883).

        >>> BrokerAddress.parse("mqtts://agent:s%40cret@broker:8884")
        BrokerAddress(host='broker', port=8884, tls=True, username='agent', password='s@cret')
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"url is not an MQTT URL ({exc}).") from None
        scheme = parts.scheme.lower()
        if scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("url must be mqtt://host[:port] or mqtts://host[:port].")
        if parts.path.strip("/") or parts.query:
            raise ValueError("url must not have a path or query; name topics in `topics`.")
        tls = scheme == "mqtts"
        return cls(parts.hostname, port or (8883 if tls else 1883), tls,
                   None if parts.username is None else unquote(parts.username),
                   None if parts.password is None else unquote(parts.password))

    def shown(self) -> str:
        """The address without credentials, for log lines."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class MqttSession:
    """A paho client subscribed with QoS 1 in a session the broker keeps across connections.

    Parameters
    ----------
    address:
        The broker.
    client_id:
        The session's name at the broker; fixed, so a restarted agent resumes its session.
    topics:
        Topic filters (``+`` and ``#`` wildcards allowed), subscribed at QoS 1 on every
        connection; retained messages are sent only when a subscription is new.
    session_expiry_s:
        How long the broker keeps the session (and queues messages for it) while the agent is
        disconnected.
    max_buffered:
        Most messages delivered and not yet acknowledged (the Receive Maximum).
    keepalive_s, connect_timeout_s, max_backoff_s:
        MQTT keepalive, socket timeout, and the cap on the wait between reconnections.
    what:
        Names the session in log lines (no secret).
    """

    def __init__(self, address: BrokerAddress, *, client_id: str, topics: tuple[str, ...],
                 session_expiry_s: int, max_buffered: int, keepalive_s: int = 30,
                 connect_timeout_s: float = 5.0, max_backoff_s: float = 30.0,
                 what: str = "MQTT") -> None:
        mqtt = import_paho()
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.address = address
        self.client_id = client_id
        self.topics = topics
        self.max_buffered = max_buffered
        self.outage = Outage(what, initial_s=min(0.5, max_backoff_s), max_s=max_backoff_s)
        self.session_present = False
        self.expect_session = False
        """Whether the broker should hold a session for us at the first connection."""
        self.sessions_lost = 0
        """Connections on which the broker had no session although it should have."""
        self.generation = 0
        self.subscription_errors: list[str] = []
        self._lock = threading.Condition()
        self._buffer: deque[Delivery] = deque()
        self._connected = False
        self._stopping = False
        self._ready = threading.Event()  # subscribed, or messages are waiting to be read
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        if address.tls:
            client.tls_set()
        if address.username is not None:
            client.username_pw_set(address.username, address.password)
        client.connect_timeout = connect_timeout_s
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry_s
        properties.ReceiveMaximum = max_buffered
        self._properties = properties
        self._keepalive_s = keepalive_s
        self._client = client
        self._network = NetworkLoop(client, name=f"mqtt-{client_id}",
                                    retry_in_s=self.outage.wait_s,
                                    on_connect_error=self._connect_failed)

    # --- state ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self, wait_s: float) -> bool:
        """Connect in the background; wait up to ``wait_s`` for the subscriptions to be made
        (or for the buffer to fill first: a resumed session's messages come before the SUBACK).

        Returns whether that happened: an unreachable broker is retried for as long as the
        session runs, never raised.
        """
        self._client.connect_async(self.address.host, self.address.port, self._keepalive_s,
                                   clean_start=False, properties=self._properties)
        self._network.start()
        return self._ready.wait(wait_s)

    def stop(self) -> None:
        """Disconnect cleanly (unacknowledged messages stay with the broker) and stop paho."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        self._client.disconnect()
        self._network.stop()

    # --- messages ---------------------------------------------------------------------------

    def take(self, count: int, timeout_s: float) -> list[Delivery]:
        """Up to ``count`` buffered messages, waiting up to ``timeout_s`` for the first."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not self._buffer and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._lock.wait(remaining)
            taken = [self._buffer.popleft() for _ in range(min(count, len(self._buffer)))]
            self._lock.notify_all()  # room for a network thread waiting in _on_message
            return taken

    def ack(self, delivery: Delivery) -> bool:
        """Send the PUBACK for ``delivery`` if it came on the current connection (QoS 0
        messages need none)."""
        with self._lock:
            if not self._connected or delivery.generation != self.generation:
                return False
            if delivery.qos > 0:
                self._client.ack(delivery.mid, delivery.qos)
                self._network.wake()
            return True

    # --- paho callbacks (network thread) ----------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self.outage.failed(ConnectionError(f"broker refused the connection: {reason}"))
            return
        with self._lock:
            self.generation += 1
            self._connected = True
            self.session_present = bool(flags.session_present)
            self._buffer.clear()  # sent again by the broker on this connection
            self._lock.notify_all()
        self.outage.succeeded()
        if not self.session_present and (self.generation > 1 or self.expect_session):
            self.sessions_lost += 1
            logger.warning(
                "%s: the broker holds no session for client id %r: messages published while "
                "the agent was away were not kept for it (the session expired, or the broker "
                "restarted without persistence) and unacknowledged ones will not be sent again",
                self.outage.what, self.client_id)
        from paho.mqtt.subscribeoptions import SubscribeOptions

        # retainHandling=1: retained messages only for a subscription the session lacked, so a
        # reconnection does not deliver them again.
        options = SubscribeOptions(qos=1, retainHandling=1)
        client.subscribe([(topic, options) for topic in self.topics])

    def _connect_failed(self, error: OSError) -> None:
        self.outage.failed(ConnectionError(f"cannot connect to {self.address.shown()}: {error}"))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        with self._lock:
            self._connected = False
            stopping = self._stopping
        if stopping:
            return
        if getattr(reason, "value", None) == 0x8E:  # Session taken over
            logger.error("%s: another client connected with client id %r and took this "
                         "session over; give every agent its own client_id", self.outage.what,
                         self.client_id)
        self.outage.failed(ConnectionError(f"disconnected: {reason}"))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        errors = [f"{topic}: {reason}" for topic, reason in zip(self.topics, reasons,
                                                                 strict=False)
                  if reason.is_failure]
        downgraded = [topic for topic, reason in zip(self.topics, reasons, strict=False)
                      if not reason.is_failure and reason.value == 0]
        if errors:
            logger.error("%s: the broker refused subscriptions (%s); nothing is read from them",
                         self.outage.what, "; ".join(errors))
        if downgraded:
            logger.warning("%s: the broker granted QoS 0 for %s; messages on them are delivered "
                           "at most once", self.outage.what, ", ".join(downgraded))
        self.subscription_errors = errors
        self._ready.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            # Only a broker exceeding Receive Maximum gets here with a full buffer (Mosquitto
            # 2.0.11 does, once PUBACKs start to flow): waiting stops paho reading the socket
            # rather than letting the buffer grow; the pipeline's next fetch makes room.
            while len(self._buffer) >= self.max_buffered and not self._stopping:
                self._ready.set()
                self._lock.wait(0.5)
            self._buffer.append(Delivery(self.generation, message.mid, message.topic,
                                         bytes(message.payload), bool(message.dup),
                                         int(message.qos)))
            self._lock.notify_all()


def import_paho() -> Any:
    """The paho client module, or a `SourceError` that says how to install it."""
    try:
        import paho.mqtt.client as mqtt
    except ModuleNotFoundError as exc:
        raise SourceError("the mqtt source needs the paho-mqtt package: "
                          "pip install 'metasentry[mqtt]'") from exc
    return mqtt
