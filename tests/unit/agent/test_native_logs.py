"""Native writes to stderr stay inside the one-JSON-object-per-line log stream."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

_SCRIPT = """
import logging, os
from agent.logs import configure_logging
from agent.native_logs import capture_native_stderr
configure_logging("INFO", json_format=True)
capture_native_stderr()
logging.getLogger("agent").info("own record")
os.write(2, b"I0000 00:00:1.0 port.cc:153] oneDNN custom operations are on\\n")
os.write(2, b"E0000 00:00:2.0 cuda.cc:52] failed call to cuInit\\nhalf a line")
"""


def test_every_stderr_line_is_a_json_object_and_nothing_is_dropped() -> None:
    result = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [r["msg"] for r in records] == [
        "own record", "I0000 00:00:1.0 port.cc:153] oneDNN custom operations are on",
        "E0000 00:00:2.0 cuda.cc:52] failed call to cuInit", "half a line"]
    assert records[0]["logger"] == "agent"
    assert [r["level"] for r in records[1:]] == ["info", "error", "info"]
    assert {r["logger"] for r in records[1:]} == {"native"}
