"""Keeping ``logging.json: true`` one JSON object per line when native code writes to stderr.

TensorFlow's C++ runtime (and absl, CUDA, oneDNN) log straight to file descriptor 2, whatever
Python's logging is configured to do, and ``TF_CPP_MIN_LOG_LEVEL`` no longer silences them
all. A log shipper that expects JSON lines then chokes on ``I0000 00:00:... port.cc:153]
oneDNN custom operations are on``. :func:`capture_native_stderr` puts a pipe behind descriptor
2: lines that are already JSON (the agent's own records) pass through unchanged, any other line
is wrapped into a JSON record from logger ``native``, so the stream stays machine-readable and
nothing written to it is lost.
"""

from __future__ import annotations

import atexit
import os
import threading
from datetime import UTC, datetime

import orjson

_installed = False
_lock = threading.Lock()


def capture_native_stderr() -> None:
    """Route descriptor 2 through a JSON-wrapping pipe (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    reader = threading.Thread(target=_forward, args=(read_end, original),
                              name="native-stderr", daemon=True)
    reader.start()

    def restore() -> None:
        # Closing the last write end lets the reader see EOF and write what is left.
        os.dup2(original, 2)
        reader.join(timeout=2.0)

    atexit.register(restore)


def _forward(read_end: int, original: int) -> None:
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            _write(original, lines)
    if pending:
        _write(original, [pending])


def _write(original: int, lines: list[bytes]) -> None:
    out = bytearray()
    for line in lines:
        if not line.strip():
            continue
        out += (line if _is_json_object(line) else _wrap(line)) + b"\n"
    if out:
        os.write(original, bytes(out))


def _is_json_object(line: bytes) -> bool:
    if not line.startswith(b"{"):
        return False
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def _wrap(line: bytes) -> bytes:
    text = line.decode("utf-8", errors="replace").rstrip("\r")
    level = "error" if text[:1] in ("E", "F") and text[1:5].isdigit() else (
        "warning" if text.startswith(("W", "WARNING")) else "info")
    return orjson.dumps({"ts": datetime.now(UTC).isoformat(), "level": level,
                         "logger": "native", "msg": text})
