"""A real webhook receiver for tests: ``http.server`` in a thread, recording every request.

It can be down (nothing listens on its port: connections are refused) and come up again on
the same port, answer each request as a test decides (``respond``), and verify signatures the
way a production receiver would, with ``adapters.sinks.webhook.verify``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from adapters.sinks.webhook import DELIVERY_HEADER, verify


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case: HTTP header names are case-insensitive
    body: bytes
    status: int

    @property
    def delivery_id(self) -> str:
        return self.headers[DELIVERY_HEADER.lower()]

    def json(self) -> Any:
        return orjson.loads(self.body)


#: (status, extra headers, body) for a request; the request's headers and body are given
Responder = Callable[[dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


def accept(_headers: dict[str, str], _body: bytes) -> tuple[int, dict[str, str], bytes]:
    return 200, {}, b"ok"


@dataclass
class Receiver:
    """Listens on ``port`` (a free one by default) once :meth:`start` is called."""

    respond: Responder = accept
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.port == 0:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = int(probe.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/metasentry"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {key.lower(): value for key, value in self.headers.items()}
                status, extra, answer = receiver.respond(headers, body)
                with receiver._lock:
                    receiver.requests.append(Received("POST", self.path, headers, body, status))
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="test-webhook-receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: from now on connections to the port are refused."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def accepted(self) -> list[Received]:
        """Requests answered 2xx, in arrival order."""
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def accepted_ids(self) -> list[str]:
        return [r.delivery_id for r in self.accepted()]

    def all_verified(self, secret: bytes) -> bool:
        """Whether every request carried a valid, fresh signature for ``secret``."""
        with self._lock:
            return all(verify(secret, r.headers, r.body) for r in self.requests)
