"""The API's front door: the bearer token and the body-size cap, decided before any body is read.

A framework dependency runs only after the framework has read and parsed the request body,
so a token check written as a dependency lets anyone make the agent buffer a body of any size
first: one unauthenticated 100 MB POST raised the agent's peak memory from 216 MB to 497 MB,
four at once to 1 GB, each answered 401. :class:`ApiGuard` is plain ASGI and sits in front of
every route: it answers 401/403 from the headers alone, answers 413 when ``Content-Length``
is over the cap, and otherwise reads the body itself, counting bytes as they arrive, so a
chunked body that streams past the cap is cut off there. A refused request whose body is over
the cap (or of unknown length) is answered with ``Connection: close`` so the server stops
receiving it; a small one is left for the server to drain, so the client reads the answer.

Which requests need the token is a rule about methods, not a list of routes, so a route added
later is covered without anyone remembering to: every write (POST, PUT, PATCH, DELETE) needs
it; reads need it when ``api.read_requires_token`` is set, except the liveness and readiness
probes, which orchestrators call without credentials. Routes must therefore never change state
on GET. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ApiGuard:
    """ASGI middleware: authorisation and body size, before the application sees a byte.

    Parameters
    ----------
    app
        The application to guard.
    token
        Returns the configured token, or None when none is configured (every request that
        needs one is then refused with 403: the API never falls open).
    token_env
        The environment variable the token comes from, named in the 403 so an operator knows
        what to set.
    reads_need_token
        ``api.read_requires_token``: reads (the API documentation included) need the token.
    open_paths
        Paths readable without a token even then: the health probes.
    max_body_bytes
        The largest body accepted; a larger one is answered 413 without being read whole.
    """

    def __init__(self, app: ASGIApp, *, token: Callable[[], str | None], token_env: str,
                 reads_need_token: bool, open_paths: Collection[str],
                 max_body_bytes: int) -> None:
        if max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}.")
        self.app = app
        self.token = token
        self.token_env = token_env
        self.reads_need_token = reads_need_token
        self.open_paths = frozenset(open_paths)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _Headers(scope)
        refusal = self._authorisation_refusal(scope, headers) or self._declared_size_refusal(
            headers)
        if refusal is not None:
            await refusal.send(send, close=self._body_too_big_to_drain(headers))
            return
        body = await self._read_body(receive)
        if body is None:
            await _Refusal(413, self._too_large).send(send, close=True)
            return
        await self.app(scope, _replay(body, receive), send)

    # --- decisions on headers alone ------------------------------------------------------

    def _needs_token(self, scope: Scope) -> bool:
        if scope["method"] in WRITE_METHODS:
            return True
        # Behind a proxy prefix (uvicorn --root-path) the path carries the prefix too.
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        return self.reads_need_token and path not in self.open_paths

    def _authorisation_refusal(self, scope: Scope, headers: _Headers) -> _Refusal | None:
        if not self._needs_token(scope):
            return None
        expected = self.token()
        if expected is None:
            if scope["method"] in WRITE_METHODS:
                return _Refusal(403, f"write routes are disabled: set {self.token_env}")
            return _Refusal(403, "reads need a token (api.read_requires_token) and none is "
                                 f"configured: set {self.token_env}")
        if not hmac.compare_digest(headers.bearer_token, expected.encode()):
            return _Refusal(401, "missing or wrong bearer token",
                            extra_headers=[(b"www-authenticate", b"Bearer")])
        return None

    def _declared_size_refusal(self, headers: _Headers) -> _Refusal | None:
        declared = headers.content_length
        if declared is None:
            return None
        if declared < 0:
            return _Refusal(400, "Content-Length is not a non-negative integer")
        if declared > self.max_body_bytes:
            return _Refusal(413, self._too_large)
        return None

    def _body_too_big_to_drain(self, headers: _Headers) -> bool:
        """Whether to close rather than let the server read and discard the unread body.

        Closing stops the upload, but a client still sending then sees a reset, not our
        answer; a body within the cap costs little to drain and the client gets a clean 401.
        """
        declared = headers.content_length
        if declared is None:
            return headers.is_chunked
        return declared < 0 or declared > self.max_body_bytes

    @property
    def _too_large(self) -> str:
        return f"body larger than {self.max_body_bytes} bytes (api.max_body_bytes)"

    # --- the body ------------------------------------------------------------------------

    async def _read_body(self, receive: Receive) -> Message | None:
        """The whole body as one message, or None as soon as it passes the cap.

        A disconnect before the end is handed on as it came, for the application to see.
        """
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return {"type": "http.request", "body": bytes(body), "more_body": False}


def _replay(first: Message, receive: Receive) -> Receive:
    """A receive() that hands out the buffered body once, then defers to the server's."""
    pending = [first]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


class _Headers:
    """The few request headers the guard reads, from the raw ASGI list."""

    def __init__(self, scope: Scope) -> None:
        self._raw: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            self._raw.setdefault(name.lower(), value)

    @property
    def bearer_token(self) -> bytes:
        scheme, _, credentials = self._raw.get(b"authorization", b"").strip().partition(b" ")
        return credentials.strip() if scheme.lower() == b"bearer" else b""

    @property
    def content_length(self) -> int | None:
        """The declared length; -1 when the header is there but not a number."""
        value = self._raw.get(b"content-length")
        if value is None:
            return None
        digits = value.strip()
        if not digits.isdigit():
            return -1
        # int() refuses strings of more than 4300 digits; any 19 digits are over every cap.
        return int(digits) if len(digits) < 19 else 10**18

    @property
    def is_chunked(self) -> bool:
        return b"transfer-encoding" in self._raw


class _Refusal:
    """A JSON error answer the guard sends itself: ``{"detail": "..."}``."""

    def __init__(self, status: int, detail: str, *,
                 extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.body = orjson.dumps({"detail": detail})
        self.headers = [(b"content-type", b"application/json"),
                        (b"content-length", str(len(self.body)).encode()),
                        *(extra_headers or [])]

    async def send(self, send: Send, *, close: bool) -> None:
        # Closing is what stops a client that is still uploading; without it the server
        # would keep receiving (and discarding) the rest of the body on this connection.
        headers = self.headers + ([(b"connection", b"close")] if close else [])
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})
