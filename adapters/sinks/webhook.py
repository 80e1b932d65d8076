"""Alerts as signed HTTP POSTs: one JSON body per alert, HMAC-SHA256 over timestamp, delivery
id and body, so a receiver can check where it came from, that it is fresh and that it is new.

The request, for each delivery::

    POST <url>
    Content-Type: application/json
    X-MetaSentry-Event: incident
    X-MetaSentry-Delivery: 1f0c8e9a-...          (the same on every retry of this alert)
    X-MetaSentry-Timestamp: 1764547200           (Unix seconds when this attempt was signed)
    X-MetaSentry-Signature: sha256=<hex>

    <the alert as JSON>

where ``<hex>`` is the lowercase hex HMAC-SHA256, keyed with the shared secret, of the bytes
``<timestamp> "." <delivery id> "." <raw body>`` (:func:`signing_string`). Signing the
timestamp lets a receiver refuse old requests replayed at it (compare it with its clock); signing
the delivery id stops a captured request from being replayed under another id to get past
de-duplication. A receiver verifies with a constant-time comparison (:func:`verify`).

Only the standard library talks HTTP here (``urllib``: proxies from ``https_proxy`` /
``no_proxy``, certificates checked against the system store or ``SSL_CERT_FILE``). Redirects are
not followed: a redirect would send the signed alert somewhere nobody configured, so it counts
as a refusal. ``timeout_s`` bounds connecting and each wait for data from the receiver.
Credentials in the URL's userinfo are sent as HTTP Basic authentication, never as part of the
request line.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import http.client
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson

from adapters.sinks.base import (
    REASON_CONNECTION,
    REASON_REFUSED,
    REASON_SERVER_ERROR,
    REASON_THROTTLED,
    REASON_TIMEOUT,
    Delivery,
    SendFailure,
    SendResult,
    never,
)

SIGNATURE_HEADER = "X-MetaSentry-Signature"
DELIVERY_HEADER = "X-MetaSentry-Delivery"
TIMESTAMP_HEADER = "X-MetaSentry-Timestamp"
EVENT_HEADER = "X-MetaSentry-Event"

#: bytes of a refusal's body kept in the error (enough for "invalid signature" and the like)
_EXCERPT_BYTES = 200
#: bytes of an answer read at most: the receiver's verdict is its status code
_READ_BYTES = 4096


def signing_string(timestamp: str, delivery_id: str, body: bytes) -> bytes:
    """The exact bytes the signature covers: ``<timestamp>.<delivery id>.<raw body>``."""
    return f"{timestamp}.{delivery_id}.".encode("ascii") + body


def sign(secret: bytes, timestamp: str, delivery_id: str, body: bytes) -> str:
    """The ``X-MetaSentry-Signature`` value: ``sha256=`` and the hex HMAC-SHA256.

    >>> sign(b"key", "1764547200", "d-1", b'{"id":1}')[:15]
    'sha256=98eae732'
    """
    digest = hmac.new(secret, signing_string(timestamp, delivery_id, body), hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify(secret: bytes, headers: Mapping[str, str], body: bytes, *,
           tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """What a receiver does: True when the signature is right and the timestamp is fresh.

    Header names are compared case-insensitively, as HTTP defines them.

    >>> headers = {TIMESTAMP_HEADER: "100", DELIVERY_HEADER: "d-1"}
    >>> headers[SIGNATURE_HEADER] = sign(b"key", "100", "d-1", b"{}")
    >>> verify(b"key", headers, b"{}", now=120), verify(b"other", headers, b"{}", now=120)
    (True, False)
    >>> verify(b"key", headers, b"{}", now=1000)
    False
    """
    named = {key.lower(): value for key, value in headers.items()}
    try:
        timestamp = named[TIMESTAMP_HEADER.lower()]
        expected = sign(secret, timestamp, named[DELIVERY_HEADER.lower()], body)
        fresh = abs((time.time() if now is None else now) - int(timestamp)) <= tolerance_s
        given = named.get(SIGNATURE_HEADER.lower(), "").encode("ascii")
    except (KeyError, ValueError, UnicodeEncodeError):
        return False
    return fresh and hmac.compare_digest(expected.encode("ascii"), given)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Turn every redirect into an HTTPError carrying the 3xx status (a refusal)."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        return None


class WebhookSink:
    """POST each alert to ``url``, signed with ``secret``.

    Parameters
    ----------
    name
        The sink's name (labels metrics and log lines).
    url
        ``http://`` or ``https://``; a userinfo part becomes HTTP Basic authentication.
    secret
        The HMAC key; never logged, never sent.
    timeout_s
        Connecting, and each wait for the receiver's answer, at most this long.
    user_agent
        The ``User-Agent`` header.
    clock
        Unix time for the timestamp header (tests pin it).

    Examples
    --------
    >>> sink = WebhookSink("siem", "https://hooks.example/alerts", secret=b"k", timeout_s=5)
    >>> sink.batch_limit
    20
    >>> WebhookSink("siem", "ftp://example/x", secret=b"k")
    Traceback (most recent call last):
    ...
    ValueError: url must be an http:// or https:// URL with a host, got scheme 'ftp'.
    """

    #: alerts per pass: few, since each may wait ``timeout_s`` and the worker's lease is finite
    batch_limit: ClassVar[int] = 20

    def __init__(self, name: str, url: str, *, secret: bytes, timeout_s: float = 10.0,
                 user_agent: str = "MetaSentry", clock: Callable[[], float] = time.time) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// URL with a host, got scheme "
                             f"{parts.scheme!r}.")
        if not secret:
            raise ValueError("secret must not be empty: every request is signed with it.")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s}.")
        self.name = name
        self._secret = bytes(secret)
        self._timeout_s = float(timeout_s)
        self._user_agent = user_agent
        self._clock = clock
        self._authorization: str | None = None
        if parts.username is not None or parts.password is not None:
            user = unquote(parts.username or "")
            password = unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._authorization = f"Basic {token}"
            host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
            if ":" in (parts.hostname or ""):  # IPv6 literal
                host = f"[{parts.hostname}]" + ("" if parts.port is None else f":{parts.port}")
            parts = parts._replace(netloc=host)
        self._url = urlunsplit(parts)
        self._opener = urllib.request.build_opener(_NoRedirects())

    def __repr__(self) -> str:
        return f"WebhookSink(name={self.name!r})"  # the URL may carry credentials

    def send(self, deliveries: Sequence[Delivery], *,
             should_stop: Callable[[], bool] = never) -> SendResult:
        delivered: list[str] = []
        for delivery in deliveries:
            if should_stop():
                break
            failure = self._post(delivery)
            if failure is not None:
                return SendResult(tuple(delivered), failure)
            delivered.append(delivery.delivery_id)
        return SendResult(tuple(delivered))

    def reopen(self) -> None:
        """Nothing to reopen: every request opens its own connection."""

    def close(self) -> None:
        """Nothing held between requests."""

    def request_for(self, delivery: Delivery) -> urllib.request.Request:
        """The signed request for one attempt at ``delivery`` (timestamp: now)."""
        body = orjson.dumps(delivery.payload, option=orjson.OPT_NON_STR_KEYS)
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            EVENT_HEADER: delivery.event_type,
            DELIVERY_HEADER: delivery.delivery_id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, delivery.delivery_id, body),
        }
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        return urllib.request.Request(self._url, data=body, headers=headers, method="POST")

    def _post(self, delivery: Delivery) -> SendFailure | None:
        request = self.request_for(delivery)
        try:
            with self._opener.open(request, timeout=self._timeout_s) as response:
                _drain(response)
            return None  # 2xx: anything else raised HTTPError
        except urllib.error.HTTPError as error:
            with error:
                return _answer_failure(delivery.delivery_id, error)
        except TimeoutError:
            return SendFailure(delivery.delivery_id, REASON_TIMEOUT,
                               f"no answer within {self._timeout_s:g}s")
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                return SendFailure(delivery.delivery_id, REASON_TIMEOUT,
                                   f"no answer within {self._timeout_s:g}s")
            return SendFailure(delivery.delivery_id, REASON_CONNECTION,
                               _one_line(f"cannot connect: {error.reason}"))
        except (http.client.HTTPException, OSError) as error:
            return SendFailure(delivery.delivery_id, REASON_CONNECTION,
                               _one_line(f"connection failed: {type(error).__name__}: {error}"))


def _drain(response: Any) -> None:
    """Read a little of a 2xx answer; the status alone says the receiver has the alert."""
    try:
        response.read(_READ_BYTES)
    except (OSError, http.client.HTTPException):
        pass


def _answer_failure(delivery_id: str, error: urllib.error.HTTPError) -> SendFailure:
    """Classify a non-2xx answer: throttled (408, 429), server error (5xx) or refused."""
    status = error.code
    try:
        excerpt = error.read(_EXCERPT_BYTES).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        excerpt = ""
    detail = _one_line(f"HTTP {status} {error.reason}" + (f": {excerpt}" if excerpt else ""))
    if status in (408, 429):
        return SendFailure(delivery_id, REASON_THROTTLED, detail,
                           retry_after_s=_retry_after(error.headers))
    if 500 <= status <= 599:
        return SendFailure(delivery_id, REASON_SERVER_ERROR, detail,
                           retry_after_s=_retry_after(error.headers))
    return SendFailure(delivery_id, REASON_REFUSED, detail)


def _retry_after(headers: Any) -> float | None:
    """``Retry-After`` in seconds (delta or HTTP date), or None when absent or unreadable."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _one_line(text: str) -> str:
    """Printable, single-line and short: it goes into a log line and a database column."""
    cleaned = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(cleaned.split())[:500]
