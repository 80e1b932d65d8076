"""The webhook sink against a real local HTTP server: what it sends, how it signs, and how it
reads each answer (adapters/sinks/webhook.py; the shared rules are in tests/contract)."""

from __future__ import annotations

import base64
import doctest
import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

import adapters.sinks.webhook
from adapters.sinks import Delivery, WebhookSink
from adapters.sinks.webhook import sign, signing_string, verify
from tests.webhook_receiver import Receiver

SECRET = b"whsec-0b5e2c"
PAYLOAD = {"id": 7, "kind": "attack", "severity": "high", "explanation": {"é": [1, 2.5, None]}}


def delivery(delivery_id: str = "6f1d-aa") -> Delivery:
    return Delivery(delivery_id, "incident", PAYLOAD, datetime(2026, 12, 1, tzinfo=UTC))


def answering(status: int, headers: dict[str, str] | None = None, body: bytes = b""
              ) -> Receiver:
    return Receiver(respond=lambda _h, _b: (status, headers or {}, body)).start()


def test_the_docstring_examples_run() -> None:
    assert doctest.testmod(adapters.sinks.webhook).failed == 0


def test_the_body_is_the_payload_and_the_signature_covers_timestamp_id_and_body() -> None:
    receiver = Receiver().start()
    try:
        sink = WebhookSink("hook", receiver.url, secret=SECRET, clock=lambda: 1764547200.9)
        assert sink.send([delivery()]).delivered == ("6f1d-aa",)
    finally:
        receiver.stop()

    (request,) = receiver.requests
    assert request.path == "/hooks/metasentry"
    assert orjson.loads(request.body) == PAYLOAD
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["x-metasentry-event"] == "incident"
    assert headers["x-metasentry-delivery"] == "6f1d-aa"
    assert headers["x-metasentry-timestamp"] == "1764547200"
    # The documented signing string, computed here without the sink's helpers.
    material = b"1764547200." + b"6f1d-aa." + request.body
    expected = "sha256=" + hmac.new(SECRET, material, hashlib.sha256).hexdigest()
    assert headers["x-metasentry-signature"] == expected
    assert signing_string("1764547200", "6f1d-aa", request.body) == material
    assert verify(SECRET, headers, request.body, now=1764547210)


@pytest.mark.parametrize("tamper", ["body", "delivery", "timestamp", "key", "stale"])
def test_a_tampered_or_stale_request_does_not_verify(tamper: str) -> None:
    body = orjson.dumps(PAYLOAD)
    headers = {"X-MetaSentry-Timestamp": "1000", "X-MetaSentry-Delivery": "d-1",
               "X-MetaSentry-Signature": sign(SECRET, "1000", "d-1", body)}
    key, now = SECRET, 1010.0
    if tamper == "body":
        body = body.replace(b"high", b"low!")
    elif tamper == "delivery":
        headers["X-MetaSentry-Delivery"] = "d-2"
    elif tamper == "timestamp":
        headers["X-MetaSentry-Timestamp"] = "1001"
    elif tamper == "key":
        key = b"another key"
    else:
        now = 1000 + 301
    assert not verify(key, headers, body, now=now)


def test_credentials_in_the_url_become_basic_auth_and_stay_off_the_request_line() -> None:
    receiver = Receiver().start()
    try:
        url = receiver.url.replace("http://", "http://svc%40corp:p%3Ass@")
        sink = WebhookSink("hook", url, secret=SECRET)
        assert sink.send([delivery()]).delivered
    finally:
        receiver.stop()
    (request,) = receiver.requests
    assert request.headers["authorization"] == "Basic " + base64.b64encode(
        b"svc@corp:p:ss").decode()
    assert "p%3Ass" not in request.path and "svc" not in request.path
    assert "p%3Ass" not in repr(sink) and "127.0.0.1" not in repr(sink)


@pytest.mark.parametrize(("status", "reason", "refused"), [
    (400, "refused", True), (401, "refused", True), (404, "refused", True),
    (410, "refused", True), (422, "refused", True),
    (408, "throttled", False), (429, "throttled", False),
    (500, "server_error", False), (502, "server_error", False), (503, "server_error", False),
])
def test_answers_are_classified(status: int, reason: str, refused: bool) -> None:
    receiver = answering(status, body=b"invalid signature\nsecond line")
    try:
        result = WebhookSink("hook", receiver.url, secret=SECRET).send([delivery()])
    finally:
        receiver.stop()
    assert result.delivered == ()
    assert result.failure is not None
    assert (result.failure.reason, result.failure.refused) == (reason, refused)
    assert result.failure.detail.startswith(f"HTTP {status}")
    assert "invalid signature second line" in result.failure.detail


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_every_2xx_is_delivered(status: int) -> None:
    receiver = answering(status)
    try:
        result = WebhookSink("hook", receiver.url, secret=SECRET).send([delivery()])
    finally:
        receiver.stop()
    assert result.delivered == ("6f1d-aa",) and result.failure is None


def test_retry_after_is_read_in_seconds_and_as_a_date() -> None:
    in_seconds = answering(429, {"Retry-After": "120"})
    as_date = answering(503, {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})
    try:
        first = WebhookSink("a", in_seconds.url, secret=SECRET).send([delivery()]).failure
        second = WebhookSink("b", as_date.url, secret=SECRET).send([delivery()]).failure
    finally:
        in_seconds.stop()
        as_date.stop()
    assert first is not None and first.retry_after_s == 120
    assert second is not None and second.retry_after_s is not None
    assert second.retry_after_s > 86400


def test_a_redirect_is_not_followed_and_counts_as_a_refusal() -> None:
    target = Receiver().start()
    redirecting = answering(307, {"Location": target.url})
    try:
        result = WebhookSink("hook", redirecting.url, secret=SECRET).send([delivery()])
    finally:
        redirecting.stop()
        target.stop()
    assert result.failure is not None and result.failure.refused
    assert target.requests == []


def test_a_receiver_that_does_not_answer_is_a_timeout() -> None:
    def hang(_headers: dict[str, str], _body: bytes) -> tuple[int, dict[str, Any], bytes]:
        time.sleep(3)
        return 200, {}, b""

    receiver = Receiver(respond=hang).start()
    try:
        started = time.monotonic()
        result = WebhookSink("hook", receiver.url, secret=SECRET, timeout_s=0.3).send(
            [delivery()])
        elapsed = time.monotonic() - started
    finally:
        receiver.stop()
    assert result.failure is not None and result.failure.reason == "timeout"
    assert elapsed < 2.5


def test_a_closed_port_is_a_connection_failure() -> None:
    down = Receiver()
    result = WebhookSink("hook", down.url, secret=SECRET, timeout_s=2).send([delivery()])
    assert result.failure is not None and result.failure.reason == "connection"


@pytest.mark.parametrize(("url", "secret", "timeout_s", "message"), [
    ("ftp://host/x", b"k", 1.0, "http:// or https://"),
    ("https:///path-only", b"k", 1.0, "with a host"),
    ("https://host/x", b"", 1.0, "secret must not be empty"),
    ("https://host/x", b"k", 0.0, "timeout_s"),
])
def test_bad_arguments_are_refused(url: str, secret: bytes, timeout_s: float,
                                   message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WebhookSink("hook", url, secret=secret, timeout_s=timeout_s)
