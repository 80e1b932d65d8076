"""The offset key of an MQTT message: the identity the store de-duplicates it by.

MQTT has no offsets. A message's packet identifier is reused as soon as it is acknowledged and
means nothing after a reconnection, and the broker adds no id or timestamp of its own, so the
key has to come from the message itself:

* with ``id_field``, the value of that field of the parsed record (a string or an integer),
  together with the topic: ``"<topic>#id=<value as JSON>"``. Two messages with the same id on
  the same topic are one record; the publisher decides what "the same" means (a sequence
  number per device, an event uuid).
* otherwise, and for a message whose record has no usable id (not parsable, the field missing
  or not a string or integer), a digest of the topic and the exact payload bytes:
  ``"<topic>#sha256=<32 hex digits>"``. A redelivered message has the same key; so do two
  messages that happen to carry identical bytes on one topic, which the store then keeps once.

Published topic names can hold neither ``#`` nor ``+`` (they are wildcards), so the first ``#``
always ends the topic and keys of different topics never collide. A key longer than the store
keeps is shortened to a prefix of the topic and a digest of the whole key.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

MAX_KEY_CHARS = 255
"""Longest offset key the store keeps."""

_DIGEST_CHARS = 32  # 128 bits: collisions between different payloads are out of reach


def content_key(topic: str, payload: bytes) -> str:
    """The key of a message known by its bytes only.

    >>> content_key("plant/7/telemetry", b'{"t": 21.5}')
    'plant/7/telemetry#sha256=2211eff096a40ef778d16e6cbf07e4d3'
    """
    digest = hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()[:_DIGEST_CHARS]
    return _bounded(f"{topic}#sha256={digest}")


def id_key(topic: str, value: Any) -> str | None:
    """The key of a message whose record carries ``value`` as its id; ``None`` when ``value``
    cannot identify a record (absent, a float, a bool, a list or an object).

    >>> id_key("plant/7/telemetry", 1042), id_key("plant/7/telemetry", "a1")
    ('plant/7/telemetry#id=1042', 'plant/7/telemetry#id="a1"')
    >>> id_key("plant/7/telemetry", 1.5) is None
    True
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return _bounded(f"{topic}#id={orjson.dumps(value).decode()}")


def key_digest(key: str) -> str:
    """A short digest of an offset key, as positions list committed keys (16 hex digits:
    collisions among the few thousand a position holds are out of reach).

    >>> key_digest("plant/7/telemetry#id=1042")
    '8ff9b0c6d23b823f'
    """
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _bounded(key: str) -> str:
    if len(key) <= MAX_KEY_CHARS:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:_DIGEST_CHARS]
    suffix = f"#long={digest}"
    return key.partition("#")[0][:MAX_KEY_CHARS - len(suffix)] + suffix
