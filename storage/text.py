"""Text every supported database can store, and text every database can store *anywhere*.

Python strings may hold two things no database column takes: the NUL character (PostgreSQL's
text types reject it; SQLite keeps it but most tools cut the value there) and unpaired UTF-16
surrogates (``"\\udcff"``, made by ``surrogateescape`` decoding and by JSON's ``"\\ud800"``),
which cannot be encoded as UTF-8 at all. A record from a hostile or broken stream can carry
either, and one unstorable row must never stop ingestion, so every text the store writes goes
through :func:`storable_text` (columns) or :func:`storable_json` (JSON strings and keys).

Both replace each offending character by U+FFFD, the Unicode replacement character. It is one
character for one, so the width checks made when a record was built still hold for what is
written, and the result is identical on SQLite and PostgreSQL.

:func:`ascii_text` and :func:`ascii_json` are the last resort, for a database that refuses even
storable text (a PostgreSQL database created with a LATIN1 or SQL_ASCII encoding): they spell
every non-ASCII character as a visible backslash escape.

>>> storable_text("GET /\\x00admin")
'GET /\\ufffdadmin'
>>> ascii_text("caf\\u00e9 \\x00")
'caf\\\\xe9 \\\\x00'
"""

from __future__ import annotations

import re
from typing import Any

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def is_storable(value: str) -> bool:
    """Whether ``value`` would be stored unchanged (no NUL, no unpaired surrogate)."""
    if value.isascii():  # the common case, without a regex scan
        return "\x00" not in value
    return _UNSTORABLE.search(value) is None


def storable_text(value: str) -> str:
    """``value`` with NUL and unpaired surrogates replaced by U+FFFD (same length)."""
    if is_storable(value):
        return value
    return _UNSTORABLE.sub(REPLACEMENT, value)


def storable_json(value: Any) -> Any:
    """A JSON-ready value with :func:`storable_text` applied to every string and key.

    Containers are rebuilt (dicts, lists; tuples become lists, as JSON has no tuples);
    numbers, numpy values and anything else are returned as they are.
    """
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {
            storable_text(key) if isinstance(key, str) else key: storable_json(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [storable_json(item) for item in value]
    return value


def ascii_text(value: str) -> str:
    """``value`` with every non-ASCII character and NUL spelled as a backslash escape."""
    return value.encode("ascii", "backslashreplace").decode("ascii").replace("\x00", "\\x00")


def ascii_json(value: Any) -> Any:
    """A JSON-ready value made of ASCII only; an object JSON cannot hold becomes its repr."""
    if isinstance(value, str):
        return ascii_text(value)
    if isinstance(value, dict):
        return {ascii_text(str(key)): ascii_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [ascii_json(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return ascii_json(value.tolist())
    return ascii_text(repr(value))
