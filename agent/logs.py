"""Logging set-up: plain text for a terminal, one JSON object per line for a log shipper.

Every handler installed here carries :class:`RedactingFilter`, so a credential that some
library (or a careless call of ours) puts into a message, an ``extra=`` field or a traceback
is masked before any formatter sees it. The code that builds messages redacts first; this
filter is the defence in depth for everything it misses.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from storage.urls import MASK, is_secret_key, redact_text

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Masks credentials in the message, string ``extra=`` fields, tracebacks and stacks.

    The message is rendered once (``msg % args``) and stored back without arguments, so a
    secret carried by an argument (an exception, a URL) is masked like one in the text.
    Redacting twice changes nothing, so a record passing several handlers is safe.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string; keep what it says, never its raw arguments
            message = f"{record.msg} % {record.args!r}"
        record.msg = redact_text(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key in _RESERVED:
                continue
            if is_secret_key(key):
                setattr(record, key, MASK)
            elif isinstance(value, str):
                setattr(record, key, redact_text(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record; extra fields passed with ``extra=`` are kept."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # RedactingFilter leaves the redacted rendering here
            payload["exc"] = record.exc_text
        return orjson.dumps(payload, default=str).decode()


def configure_logging(level: str = "INFO", *, json_format: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter at INFO drowns the agent's own lines.
    for noisy in ("apscheduler", "uvicorn.access", "alembic", "tensorflow", "absl"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
