"""Client-side deadlines for database calls that the network may leave hanging for ever.

libpq has no read timeout. When packets to PostgreSQL are silently dropped, or the server's
host freezes while its kernel still acknowledges, a query waits for a reply that never comes;
server-side ``statement_timeout`` cannot help (the server never saw the query) and TCP
keepalives only probe idle connections. So the store arms a deadline around every call, and
when it passes, the connection's socket is shut down from this module's thread: the blocked
call then fails at once with a connection error, the pool discards the connection, and the
caller sees :class:`~storage.records.StoreUnavailable` and retries.

One daemon thread serves every deadline of a store; arming and disarming are O(log n) and
never block on the database.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)


class Deadline:
    """One armed deadline; :attr:`fired` says whether its action ran."""

    __slots__ = ("action", "at", "cancelled", "fired")

    def __init__(self, at: float, action: Callable[[], None]) -> None:
        self.at = at
        self.action = action
        self.cancelled = False
        self.fired = False


class Watchdog:
    """Runs an action when a deadline passes, unless the deadline was disarmed first."""

    def __init__(self, name: str = "store-watchdog") -> None:
        self._name = name
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, seconds: float, action: Callable[[], None]) -> Deadline:
        """Run ``action`` in ``seconds`` unless :meth:`disarm` is called first."""
        deadline = Deadline(time.monotonic() + seconds, action)
        with self._wake:
            if self._closed:
                raise RuntimeError("the watchdog is closed; deadlines can no longer be armed.")
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._wake.notify()
        return deadline

    def disarm(self, deadline: Deadline) -> None:
        """Cancel a deadline; a no-op once it fired."""
        with self._wake:
            deadline.cancelled = True

    def close(self) -> None:
        """Stop the thread; pending deadlines are dropped."""
        with self._wake:
            self._closed = True
            self._heap.clear()
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed:
                    while self._heap and self._heap[0][2].cancelled:
                        heapq.heappop(self._heap)
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        break
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(timeout)
                if self._closed:
                    return
                _, _, due = heapq.heappop(self._heap)
                due.fired = True
            try:
                due.action()
            except Exception:  # a failed action must not end the thread serving the others
                logger.exception("deadline action failed")


class _SocketConnection(Protocol):
    @property
    def closed(self) -> bool: ...

    def fileno(self) -> int: ...


def shut_down_socket(connection: _SocketConnection) -> Callable[[], None]:
    """An action that shuts the connection's socket down both ways, waking whoever waits on it.

    The descriptor is duplicated, not closed, so the driver that owns it still closes it as
    usual; shutting down a duplicate shuts down the one connection they share. A connection
    closed meanwhile is left alone: its descriptor number may already belong to another socket.
    """

    def shut_down() -> None:
        # Best effort by design: the connection may close under us (the driver then raises its
        # own error type), and a deadline that finds nothing to shut down has nothing to do.
        with contextlib.suppress(Exception):
            if connection.closed:
                return
            with socket.socket(fileno=os.dup(connection.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)

    return shut_down
