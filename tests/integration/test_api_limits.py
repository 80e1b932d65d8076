"""A real uvicorn server under big unauthenticated uploads: refused on the headers, memory flat.

Before the token was checked ahead of the body, one unauthenticated 100 MB POST raised the
agent's peak RSS by about 280 MB and four at once by about 800 MB, each answered 401.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

TOKEN = "limits-token-7a1c"
HUNDRED_MB = 100_000_000
# Start-up work (first requests, lazy imports) is done before the baseline is read; what is
# left is allocator noise, far below one body.
ALLOWED_GROWTH_MIB = 40

SERVE = """
import sys, uvicorn
from agent.api import create_app
from agent.config import load_config
from agent.service import Agent
agent = Agent(load_config(sys.argv[1]))
agent.prepare()
uvicorn.run(create_app(agent), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc for RSS"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture
def server(write_config: Callable[..., Path]) -> Iterator[tuple[int, int]]:
    port = _free_port()
    config = write_config()
    env = os.environ | {"METASENTRY_API_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(config), str(port)], env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        # Warm every path a request takes (auth, body, validation, store) before the baseline.
        httpx.post(f"http://127.0.0.1:{port}/v1/incidents/1/label", json={"label": "x"},
                   headers={"Authorization": f"Bearer {TOKEN}"})
        yield proc.pid, port
    finally:
        proc.terminate()
        proc.wait(30)


def _upload(port: int, size: int, statuses: list[str]) -> None:
    """Send the headers, then as much of the body as the server takes; record its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(f"POST /v1/incidents/1/label HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n".encode())
        answered, _, _ = select.select([conn], [], [], 2)
        if answered:  # refused on the headers: read the answer before the connection closes
            statuses.append(conn.recv(4096).split(b"\r\n", 1)[0].decode())
            return
        chunk = b"x" * (1 << 20)
        try:
            for _ in range(size // len(chunk)):
                conn.sendall(chunk)
            conn.sendall(b"x" * (size % len(chunk)))
            statuses.append(conn.recv(4096).split(b"\r\n", 1)[0].decode())
        except OSError as exc:
            statuses.append(f"connection ended: {exc}")


def test_unauthenticated_100mb_bodies_leave_memory_flat(server: tuple[int, int]) -> None:
    pid, port = server
    baseline = _peak_rss_mib(pid)
    statuses: list[str] = []
    _upload(port, HUNDRED_MB, statuses)
    after_one = _peak_rss_mib(pid)
    uploads = [threading.Thread(target=_upload, args=(port, HUNDRED_MB, statuses))
               for _ in range(4)]
    for upload in uploads:
        upload.start()
    for upload in uploads:
        upload.join(120)
    after_four = _peak_rss_mib(pid)
    print(f"peak RSS: {baseline:.0f} MiB at rest, {after_one:.0f} MiB after one unauthenticated "
          f"100 MB body, {after_four:.0f} MiB after four more at once; answers {statuses}")
    assert statuses == ["HTTP/1.1 401 Unauthorized"] * 5
    assert after_four - baseline < ALLOWED_GROWTH_MIB
