"""PostgreSQL fault injection: a TCP relay between the agent and the real server.

The faults are real ones: ``down`` closes every connection, as a database host that goes away
does; ``blackhole`` keeps the connections open but forwards nothing, as a network that silently
drops packets does (what was held is delivered once ``heal`` is called, as TCP retransmission
would). The fixtures built on it live in this folder's conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading

from sqlalchemy import make_url

PG_URL = os.environ.get("METASENTRY_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PG_TARGET = (make_url(PG_URL).host or "127.0.0.1", make_url(PG_URL).port or 5432)


class Relay:
    """A TCP relay to PostgreSQL that can be cut, blackholed, and restored."""

    def __init__(self, target: tuple[str, int] = PG_TARGET) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._until_blackhole: int | None = None  # bytes still forwarded before a blackhole

    def url(self, database: str) -> str:
        """The test server's URL, with ``database``, reached through this relay."""
        through = make_url(PG_URL).set(host="127.0.0.1", port=self.port, database=database)
        return through.render_as_string(hide_password=False)

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                # close() alone leaves a thread blocked in accept() listening; shutdown wakes it.
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def blackhole(self, *, after_bytes: int = 0) -> None:
        """Stop forwarding in both directions; sockets stay open and new ones are accepted.

        With ``after_bytes``, the silence starts once that many more bytes went through: in
        the middle of a large statement, say, when the call is already past its checkout.
        """
        with self._lock:
            if after_bytes > 0:
                self._until_blackhole = after_bytes
            else:
                self._flowing.clear()

    def heal(self) -> None:
        """Forward again, what was held first."""
        with self._lock:
            self._until_blackhole = None
        self._flowing.set()

    def _count(self, forwarded: int) -> None:
        with self._lock:
            if self._until_blackhole is None:
                return
            self._until_blackhole -= forwarded
            if self._until_blackhole <= 0:
                self._until_blackhole = None
                self._flowing.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                self._count(len(data))
                self._flowing.wait()
                dst.sendall(data)
        self._flowing.wait()
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
