"""The Redis server tests run against (METASENTRY_TEST_REDIS_URL), and a private stream per test.

Tests use the real server, never a mock of it; without a server (or without the ``redis``
package) they are skipped with a reason that says so.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest

REDIS_URL = os.environ.get("METASENTRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_PARTS = urlsplit(REDIS_URL)
REDIS_TARGET = (_PARTS.hostname or "127.0.0.1", _PARTS.port or 6379)
"""Host and port of the test server, for a relay in front of it."""


def url_through(port: int) -> str:
    """The test server's URL with its host and port replaced by ``127.0.0.1:port``."""
    netloc = _PARTS.netloc.rpartition("@")
    userinfo = netloc[0] + "@" if netloc[1] else ""
    return _PARTS._replace(netloc=f"{userinfo}127.0.0.1:{port}").geturl()


def redis_client() -> Any:
    """A client of the test server; skips the test when the package or the server is missing."""
    redis = pytest.importorskip("redis", reason="the redis package is not installed "
                                "(pip install -e '.[dev]')")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=10)
    try:
        client.ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        client.close()
        pytest.skip(f"Redis at {REDIS_URL} does not answer: {error}")
    return client


def new_stream_key(prefix: str = "metasentry:test") -> str:
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


@contextmanager
def private_stream(prefix: str = "metasentry:test") -> Iterator[tuple[Any, str]]:
    """``(client, key)`` of a stream key no other test uses; it and its dead letters are
    deleted afterwards."""
    client = redis_client()
    key = new_stream_key(prefix)
    try:
        yield client, key
    finally:
        client.delete(key, f"{key}:dead")
        client.close()
