"""A paho MQTT client's network traffic, driven on a thread of its own through a selector.

paho's own network thread (`loop_start`) waits with ``select()``, which cannot watch a file
descriptor numbered 1024 or higher. In a process holding about a thousand open files and
sockets (an agent's database pool, its HTTP clients, other sources, a host of log files) the
client's socket gets such a number, and every connection then ends before CONNECT is sent: the
source reconnects forever and never reads a message, with nothing in the log that says why.
This loop waits with `selectors.DefaultSelector` (epoll on Linux), which has no such limit, and
moves bytes with paho's external-loop calls (`loop_read`, `loop_write`, `loop_misc`), so the
protocol itself stays paho's.

All socket I/O happens on this thread. Another thread that queues a packet (a PUBACK, a
DISCONNECT) wakes it through paho's ``on_socket_register_write`` hook or `NetworkLoop.wake`.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

POLL_S = 1.0
"""Longest wait between keepalive checks (`loop_misc`) when the socket is quiet."""


class NetworkLoop:
    """Connects ``client`` and carries its traffic until `stop`.

    Parameters
    ----------
    client:
        A paho ``Client`` whose ``connect_async`` was called (host, port and CONNECT properties
        are set); this loop makes the connection.
    name:
        The thread's name.
    retry_in_s:
        Seconds until the next connection attempt after a failed or lost one (0: now), e.g. an
        `adapters._outage.Outage`'s ``wait_s``; ``None`` makes one attempt only, for a client
        that must not outlive its connection.
    on_connect_error:
        Called on this thread with the error when a connection cannot be made (refused, DNS,
        TLS); a connection that is made and then lost reaches paho's ``on_disconnect`` instead.
    """

    def __init__(self, client: Any, *, name: str,
                 retry_in_s: Callable[[], float] | None = None,
                 on_connect_error: Callable[[OSError], None] | None = None) -> None:
        self._client = client
        self._retry_in_s = retry_in_s
        self._on_connect_error = on_connect_error
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        client.on_socket_register_write = lambda *_: self.wake()
        self._stopping = threading.Event()
        self._stop_deadline = 0.0
        self._attempted = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the thread still runs (a loop without ``retry_in_s`` ends with its
        connection)."""
        return self._thread.is_alive()

    def wake(self) -> None:
        """Make the loop look at the client now (a packet was queued from another thread)."""
        try:
            self._wake_writer.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or the loop has ended

    def stop(self, flush_s: float = 5.0) -> None:
        """End the loop once what is queued (a DISCONNECT) is sent, waiting at most
        ``flush_s``; call the client's ``disconnect`` first for a clean goodbye."""
        self._stop_deadline = time.monotonic() + flush_s
        self._stopping.set()
        self.wake()
        if self._thread is threading.current_thread():
            return  # stopped from a callback: the loop ends when it returns
        if self._thread.ident is not None:  # started
            self._thread.join(flush_s + POLL_S)
        if not self._thread.is_alive():
            self._wake_reader.close()
            self._wake_writer.close()

    # --- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_reader, selectors.EVENT_READ)
        watched: Any = None
        try:
            while not self._done():
                sock = self._client.socket()
                if sock is not watched:
                    if watched is not None:
                        selector.unregister(watched)
                    watched = sock
                    if sock is not None:
                        selector.register(sock, selectors.EVENT_READ)
                if sock is None:
                    if not self._connect():
                        break
                    continue
                self._exchange(selector, sock)
        except Exception:  # noqa: BLE001 - a dying network thread must say why
            logger.exception("the MQTT network loop %s stopped", self._thread.name)
        finally:
            selector.close()

    def _done(self) -> bool:
        if not self._stopping.is_set():
            return False
        return (self._client.socket() is None or not self._client.want_write()
                or time.monotonic() >= self._stop_deadline)

    def _connect(self) -> bool:
        """Make a connection attempt when it is due; False ends the loop."""
        if self._stopping.is_set() or (self._attempted and self._retry_in_s is None):
            return False
        wait_s = self._retry_in_s() if self._retry_in_s is not None else 0.0
        if wait_s > 0:
            self._stopping.wait(min(wait_s, POLL_S))
            return True
        self._attempted = True
        try:
            self._client.reconnect()
        except OSError as error:
            if self._on_connect_error is not None:
                self._on_connect_error(error)
            return self._retry_in_s is not None
        return True

    def _exchange(self, selector: selectors.BaseSelector, sock: Any) -> None:
        """Wait for the socket (or a wake-up), then read, write and keep the connection alive."""
        client = self._client
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.want_write() else 0)
        if selector.get_key(sock).events != wanted:
            selector.modify(sock, wanted)
        # TLS may hold decrypted bytes the socket no longer signals.
        pending = getattr(sock, "pending", None)
        buffered = bool(pending and pending())
        readable = writable = False
        for key, events in selector.select(0.0 if buffered else POLL_S):
            if key.fileobj is self._wake_reader:
                self._drain_wake_ups()
            else:
                readable = bool(events & selectors.EVENT_READ)
                writable = bool(events & selectors.EVENT_WRITE)
        if readable or buffered:
            client.loop_read()
        if (writable or client.want_write()) and client.socket() is sock:
            client.loop_write()
        client.loop_misc()

    def _drain_wake_ups(self) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
