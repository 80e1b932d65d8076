"""Masking credentials in URLs and in free text, before either reaches a log or a terminal.

A database URL can carry a secret in three places: the userinfo (``user:PASSWORD@host``), a
query parameter (``?password=...``, ``?sslpassword=...``) and, once logged, any message that
quotes it. SQLAlchemy's ``render_as_string(hide_password=True)`` masks only the first, so
every line that shows a URL goes through :func:`redact_url`, and every log line through
:func:`redact_text` as a second line of defence.

The rules lean towards masking too much: a password may hold ``@``, ``:``, ``/``, ``?`` or
``#`` unencoded, so the userinfo is taken to end at the *last* ``@`` of the URL. A URL whose
query holds an ``@`` loses its host in the redacted form; that is the price of never showing
a fragment of a password.

It lives in ``storage`` (which imports nothing from the rest of the project) so that the store
redacts its own URL; the agent uses it for logs, errors and ``check-config``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

# Query parameters and ``key=value`` pairs whose value is a secret. ``passfile``, ``sslkey``
# and ``sslcert`` name files, not secrets, and stay readable.
_SECRET_KEY = re.compile(
    r"(?:ssl)?password|passwd|pwd|pass|secret|client_secret|(?:access_|auth_|api_|refresh_)?token"
    r"|api_?key|private_key",
    re.IGNORECASE,
)
_QUERY_PAIR = re.compile(r"(?P<sep>[?&;])(?P<key>[^=&;#]*)=(?P<value>[^&;#]*)")
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://\S+")
_PAIR_IN_TEXT = re.compile(
    r"(?P<key>\b(?:" + _SECRET_KEY.pattern + r"))\b(?P<eq>\s*=\s*)"
    r"(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;,)]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(?P<scheme>Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """Whether a query parameter or setting named ``key`` holds a secret."""
    return _SECRET_KEY.fullmatch(unquote(key).strip()) is not None


def redact_url(url: str) -> str:
    """``url`` with the userinfo password and secret query values replaced by ``***``.

    >>> redact_url("postgresql+psycopg://svc:p@ss:w/rd#1?x@db:5432/prod?sslmode=require")
    'postgresql+psycopg://svc:***@db:5432/prod?sslmode=require'
    >>> redact_url("postgresql://db/prod?user=svc&password=hunter2&passfile=/etc/pgpass")
    'postgresql://db/prod?user=svc&password=***&passfile=/etc/pgpass'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _redact_query(url)
    userinfo, at, hostpart = rest.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        rest = f"{user}:{MASK}@{hostpart}" if colon else f"{userinfo}@{hostpart}"
    return f"{scheme}://{_redact_query(rest)}"


def _redact_query(text: str) -> str:
    def mask(match: re.Match[str]) -> str:
        if not is_secret_key(match["key"]):
            return match[0]
        return f"{match['sep']}{match['key']}={MASK}"

    return _QUERY_PAIR.sub(mask, text)


def redact_text(text: str) -> str:
    """Any message with the credentials it quotes masked: URLs, ``password=x``, bearer tokens.

    Only ``key=value`` pairs count outside URLs: ``key: value`` is too common in prose
    ("first pass: 3 files") to mask without hiding what the line is about.

    >>> redact_text("store at postgresql://u:pw@h/db?password=pw unavailable: password=pw")
    'store at postgresql://u:***@h/db?password=*** unavailable: password=***'
    """
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m[0]), text)
    text = _PAIR_IN_TEXT.sub(lambda m: f"{m['key']}{m['eq']}{MASK}", text)
    return _BEARER.sub(lambda m: f"{m['scheme']} {MASK}", text)
