"""The MQTT network loop with nothing listening: failed connections are reported and retried on
the caller's schedule, and stopping never waits for a broker that is not there.

Traffic with a real Mosquitto (including from a process holding over 1024 file descriptors) is
in tests/integration/test_mqtt_source.py.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from adapters._mqtt_network import NetworkLoop

mqtt = pytest.importorskip("paho.mqtt.client", reason="the paho-mqtt package is not installed")


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unconnected_client() -> object:
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="network-loop-test",
                         protocol=mqtt.MQTTv5)
    client.connect_async("127.0.0.1", closed_port())
    return client


def test_a_refused_connection_is_retried_on_the_given_schedule() -> None:
    errors: list[OSError] = []
    three = threading.Event()

    def refused(error: OSError) -> None:
        errors.append(error)
        if len(errors) >= 3:
            three.set()

    loop = NetworkLoop(unconnected_client(), name="test", retry_in_s=lambda: 0.0,
                       on_connect_error=refused)
    loop.start()
    try:
        assert three.wait(10), "the loop stopped trying"
    finally:
        loop.stop()
    assert all(isinstance(error, ConnectionRefusedError) for error in errors)


def test_without_a_schedule_one_attempt_is_made_and_the_loop_ends() -> None:
    errors: list[OSError] = []
    loop = NetworkLoop(unconnected_client(), name="test", on_connect_error=errors.append)
    loop.start()
    deadline = time.monotonic() + 10
    while loop.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not loop.running
    assert len(errors) == 1
    loop.stop()


def test_stopping_while_waiting_to_retry_returns_at_once() -> None:
    waiting = threading.Event()

    def far_off() -> float:
        waiting.set()
        return 3600.0

    loop = NetworkLoop(unconnected_client(), name="test", retry_in_s=far_off)
    loop.start()
    assert waiting.wait(10)
    started = time.monotonic()
    loop.stop()
    assert time.monotonic() - started < 2.0
    assert not loop.running
