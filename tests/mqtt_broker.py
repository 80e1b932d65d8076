"""The MQTT broker tests run against (METASENTRY_TEST_MQTT_URL), and brokers of their own.

Mosquitto keeps at most ``max_queued_messages`` (1000 by default) queued for a session beyond
those in flight and drops the rest, so a test never publishes more than that while its agent is
not reading.

Tests use a real Mosquitto, never a mock of it. The shared broker (default 127.0.0.1:1883)
serves tests that only publish and read, each on topics and client ids of its own; a test that
restarts the broker starts its own (`PrivateBroker`) on a free port with persistence on, and
never touches the shared one. Without the paho-mqtt package, the broker or the mosquitto
binary, tests are skipped with a reason that says so.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

MQTT_URL = os.environ.get("METASENTRY_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
_PARTS = urlsplit(MQTT_URL)
MQTT_HOST = _PARTS.hostname or "127.0.0.1"
MQTT_PORT = _PARTS.port or 1883
MQTT_TARGET = (MQTT_HOST, MQTT_PORT)
"""Host and port of the shared broker, for a relay in front of it."""
MOSQUITTO = os.environ.get("METASENTRY_TEST_MOSQUITTO", shutil.which("mosquitto")
                           or "/usr/sbin/mosquitto")


def _paho() -> Any:
    return pytest.importorskip("paho.mqtt.client", reason="the paho-mqtt package is not "
                               "installed (pip install -e '.[dev]')")


def require_broker(host: str = MQTT_HOST, port: int = MQTT_PORT) -> None:
    """Skip the test unless paho is installed and a broker listens at ``host:port``."""
    _paho()
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as error:
        pytest.skip(f"MQTT broker at {host}:{port} does not answer: {error}")


def new_name(prefix: str = "metasentry-test") -> str:
    """A topic level or client id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _client(client_id: str, port: int) -> Any:
    mqtt = _paho()
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    return client


def prepare_session(client_id: str, topics: Iterable[str], *, port: int = MQTT_PORT,
                    expiry_s: int = 600) -> None:
    """Create ``client_id``'s persistent session subscribed at QoS 1, so messages published
    from now on are queued for it even before the source first connects."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = _client(client_id, port)
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = expiry_s
    client.connect_async(MQTT_HOST, port, clean_start=True, properties=properties)
    with _network(client) as connected:
        _wait(connected, "the connection")
        client.subscribe([(topic, 1) for topic in topics])
        if not subscribed.wait(10):
            raise AssertionError("the broker did not confirm the subscriptions")


def drop_session(client_id: str, *, port: int = MQTT_PORT) -> None:
    """Delete ``client_id``'s session and what the broker queued for it."""
    client = _client(client_id, port)
    try:
        client.connect(MQTT_HOST, port, clean_start=True)
        client.disconnect()
    except OSError:
        pass


def publish(topic: str, payloads: Iterable[bytes], *, port: int = MQTT_PORT, qos: int = 1,
            retain: bool = False) -> None:
    """Publish ``payloads`` in order and wait until the broker acknowledged each one."""
    client = _client(new_name("publisher"), port)
    client.connect_async(MQTT_HOST, port)
    with _network(client) as connected:
        _wait(connected, "the connection")
        for payload in payloads:
            client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(10)


@contextmanager
def _network(client: Any) -> Iterator[Callable[[], bool]]:
    """Carry ``client``'s traffic the way the agent does (never with paho's ``select()`` loop,
    which fails once the test process holds 1024 file descriptors), then disconnect.

    Yields whether the client is connected, which raises once the connection was refused.
    """
    from adapters._mqtt_network import NetworkLoop

    refused: list[OSError] = []
    loop = NetworkLoop(client, name="mqtt-test-client", on_connect_error=refused.append)

    def connected() -> bool:
        if refused:
            raise AssertionError(f"cannot connect to the MQTT broker: {refused[0]}")
        return bool(client.is_connected())

    loop.start()
    try:
        yield connected
    finally:
        client.disconnect()
        loop.stop()


def _wait(predicate: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateBroker:
    """A Mosquitto of one test, on a free port, saving its state in ``directory``.

    Persistence is on, so a clean stop (SIGTERM) writes the sessions and their queued and
    unacknowledged messages to disk and a restart reads them back, as a production broker
    configured for MQTT sessions does.
    """

    def __init__(self, directory: Path) -> None:
        if not Path(MOSQUITTO).is_file():
            pytest.skip(f"no mosquitto binary at {MOSQUITTO} (apt-get install mosquitto, or "
                        "set METASENTRY_TEST_MOSQUITTO)")
        _paho()
        self.directory = directory
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {directory}/\nautosave_interval 1\n"
            # Mosquitto drops what a session queues beyond 1000 messages by default.
            "max_queued_messages 100000\n"
            # Started as root, Mosquitto would switch to its own user, which may not write here.
            f"user {getpass.getuser()}\n"
            f"log_dest file {directory}/mosquitto.log\n")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "mosquitto.log")
                    raise RuntimeError("mosquitto did not start: " + (
                        log.read_text()[-2000:] if log.exists() else "no log")) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop cleanly (SIGTERM): mosquitto saves its state before it exits."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        self._process = None


@contextmanager
def private_broker(directory: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(directory)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
