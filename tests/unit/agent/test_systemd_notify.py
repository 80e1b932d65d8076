"""The notify protocol on a real datagram socket: messages arrive, the watchdog period follows
WATCHDOG_USEC/WATCHDOG_PID, heartbeats stop while the agent is stuck and resume after."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.systemd import Watchdog, notify, watchdog_interval_s


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield sock, {"NOTIFY_SOCKET": str(path)}
    sock.close()


def _drain(sock: socket.socket, seconds: float) -> list[str]:
    messages, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return messages


def test_a_message_reaches_the_socket_and_nothing_happens_without_one(
        listener: tuple[socket.socket, dict[str, str]]) -> None:
    sock, environ = listener
    assert notify("READY=1", environ)
    assert sock.recv(4096) == b"READY=1"
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": "/nonexistent/notify.sock"})


def test_an_abstract_socket_name_starts_with_a_nul() -> None:
    name = f"metasentry-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        assert notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STOPPING=1"


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "60000000"}, 30.0),
    ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"}, 30.0),
    ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),   # another process's
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_the_heartbeat_interval_is_half_the_period_systemd_set_for_this_process(
        environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval_s(environ, pid=4242) == expected


def test_heartbeats_stop_while_stuck_say_why_once_and_resume(
        listener: tuple[socket.socket, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    sock, environ = listener
    state: dict[str, str | None] = {"reason": None}
    watchdog = Watchdog(lambda: state["reason"], 0.05, environ=environ)
    watchdog.start()
    try:
        healthy = _drain(sock, 0.4)
        assert healthy.count("WATCHDOG=1") >= 3
        state["reason"] = "a batch commit has been in flight for 130s (limit 120s)"
        stuck = _drain(sock, 0.5)
        status = "STATUS=stuck: a batch commit has been in flight for 130s (limit 120s)"
        assert stuck.count(status) == 1
        # At most the beat already in flight before the probe saw the change; none after.
        assert "WATCHDOG=1" not in stuck[stuck.index(status):]
        assert stuck.index(status) <= 1
        state["reason"] = None
        resumed = _drain(sock, 0.4)
        assert resumed[0] == "STATUS=running" and resumed.count("WATCHDOG=1") >= 3
    finally:
        watchdog.stop()
    errors = [r for r in caplog.records if "heartbeats withheld" in r.getMessage()]
    assert len(errors) == 1


def test_a_probe_that_raises_withholds_the_heartbeat(
        listener: tuple[socket.socket, dict[str, str]]) -> None:
    sock, environ = listener

    def broken() -> str | None:
        raise RuntimeError("metrics gone")

    watchdog = Watchdog(broken, 0.05, environ=environ)
    watchdog.start()
    try:
        messages = _drain(sock, 0.3)
    finally:
        watchdog.stop()
    assert "WATCHDOG=1" not in messages
    assert messages and messages[0].startswith("STATUS=stuck: health probe failed")
    with pytest.raises(ValueError):
        Watchdog(lambda: None, 0)


def test_the_pipeline_stalls_when_its_thread_ends_or_a_commit_outlives_twice_the_deadline(
        write_config: Callable[..., Path]) -> None:
    from agent.config import load_config
    from agent.daemon import pipeline_stall
    from agent.metrics import Metrics

    config = load_config(write_config(**{"storage.timeouts.statement_s": 0.04,
                                         "storage.timeouts.operation_s": 0.05}),
                         check_environment=False)
    metrics, release = Metrics(), threading.Event()
    worker = threading.Thread(target=release.wait, daemon=True)
    worker.start()
    stall = pipeline_stall(config, metrics, worker)
    assert stall() is None
    with metrics.in_flight.track():
        assert stall() is None          # a commit within the store's deadline is progress
        time.sleep(0.15)
        reason = stall()
        assert reason is not None and "in flight" in reason and "limit 0.1s" in reason
    assert stall() is None
    release.set()
    worker.join(2)
    assert stall() == "the pipeline thread has ended"
