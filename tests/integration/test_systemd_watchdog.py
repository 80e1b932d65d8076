"""`metasentry run` under systemd's notify protocol, as a real process: READY=1 once serving,
WATCHDOG=1 heartbeats at half the WATCHDOG_USEC period while the pipeline runs, STOPPING=1 on
SIGTERM and a clean exit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def _messages(sock: socket.socket, until: Callable[[list[str]], bool], seconds: float
              ) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while not until(seen) and (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return seen


def test_the_agent_reports_ready_sends_heartbeats_and_reports_stopping(
        write_config: Callable[..., Path], tmp_path: Path) -> None:
    stream = tmp_path / "stream.csv"
    stream.write_bytes(b"")  # followed: the pipeline waits for lines, alive and idle
    config = write_config(**{"sources": [{"name": "followed", "type": "csv_file",
                                          "path": str(stream), "mode": "follow",
                                          "header": False}]})
    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        env = os.environ | {"NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "1000000",
                            "PYTHONUNBUFFERED": "1"}
        env.pop("WATCHDOG_PID", None)
        log = tmp_path / "agent.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config",
                                     str(config)], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            started = _messages(sock, lambda seen: "READY=1" in seen, 120)
            assert "READY=1" in started, log.read_text()[-3000:]
            beats = _messages(sock, lambda seen: seen.count("WATCHDOG=1") >= 4, 10)
            assert beats.count("WATCHDOG=1") >= 4  # every 0.5 s for a 1 s period
            proc.send_signal(signal.SIGTERM)
            stopping = _messages(sock, lambda seen: "STOPPING=1" in seen, 30)
            assert "STOPPING=1" in stopping
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert "systemd watchdog: a heartbeat every 0.5s" in log.read_text()
