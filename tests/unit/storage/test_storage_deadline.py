"""Deadlines on database calls: the action runs when one passes, never after a disarm."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from storage.deadline import Watchdog, shut_down_socket


def test_a_passed_deadline_runs_its_action_and_a_disarmed_one_never_does() -> None:
    watchdog = Watchdog()
    ran: list[str] = []
    late = watchdog.arm(0.05, lambda: ran.append("late"))
    early = watchdog.arm(0.01, lambda: ran.append("early"))
    kept = watchdog.arm(0.02, lambda: ran.append("disarmed"))
    watchdog.disarm(kept)
    time.sleep(0.3)
    watchdog.close()
    assert ran == ["early", "late"]
    assert (early.fired, late.fired, kept.fired) == (True, True, False)


def test_a_failing_action_does_not_stop_the_others() -> None:
    watchdog = Watchdog()
    ran = threading.Event()

    def fail() -> None:
        raise RuntimeError("boom")

    watchdog.arm(0.01, fail)
    watchdog.arm(0.02, ran.set)
    assert ran.wait(2)
    watchdog.close()
    with pytest.raises(RuntimeError, match="closed"):
        watchdog.arm(1, ran.set)


class _Connection:
    """What shut_down_socket needs from a driver connection: ``closed`` and ``fileno()``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()


def test_shutting_the_socket_down_wakes_a_reader_blocked_on_it() -> None:
    ours, theirs = socket.socketpair()  # `theirs` never answers: a silent peer
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(ours.recv(10)))
    reader.start()
    time.sleep(0.05)
    watchdog = Watchdog()
    watchdog.arm(0.05, shut_down_socket(_Connection(ours)))
    reader.join(5)
    watchdog.close()
    assert not reader.is_alive() and got == [b""]
    assert ours.fileno() != -1, "the descriptor stays the driver's to close"
    ours.close()
    theirs.close()


def test_a_connection_closed_meanwhile_is_left_alone() -> None:
    ours, theirs = socket.socketpair()
    connection = _Connection(ours)
    connection.closed = True
    shut_down_socket(connection)()
    theirs.sendall(b"x")
    assert ours.recv(1) == b"x", "still open: its number may belong to someone else by now"
    ours.close()
    theirs.close()
