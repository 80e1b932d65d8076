"""`metasentry run` with alert sinks, as a real process: incidents of a followed stream reach a
signed webhook and a JSON-lines file; the file is rotated and SIGHUP sent (the agent keeps
running and writes to the new file); SIGTERM exits 0; every alert is delivered exactly once."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from agent.config import load_config
from agent.service import wait_for
from storage import Store
from tests.webhook_receiver import Receiver

REPO = Path(__file__).resolve().parents[2]
STREAM = REPO / "examples" / "nsl-kdd" / "stream.csv.gz"
KEY = "service-hook-key-42aa"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _jsonl_ids(*paths: Path) -> list[str]:
    return [orjson.loads(line)["delivery_id"] for path in paths if path.exists()
            for line in path.read_bytes().splitlines()]


def test_sinks_get_every_alert_once_and_the_file_follows_sighup_rotation(
        write_config: Callable[..., Path], tmp_path: Path) -> None:
    lines = gzip.decompress(STREAM.read_bytes()).splitlines(keepends=True)
    stream = tmp_path / "stream.csv"
    stream.write_bytes(b"".join(lines[:3000]))
    alerts = tmp_path / "alerts.jsonl"
    receiver = Receiver().start()
    metrics_port = _free_port()
    config_path = write_config(**{
        "sources": [{"name": "followed", "type": "csv_file", "path": str(stream),
                     "mode": "follow", "header": False}],
        "metrics.enabled": True, "metrics.listen": f"127.0.0.1:{metrics_port}",
        "sinks": [
            {"type": "webhook", "name": "hook", "url": receiver.url, "secret_env": "HOOK_KEY",
             "min_severity": "medium", "kinds": ["drift"], "timeout_s": 5},
            {"type": "jsonl", "name": "siem", "path": str(alerts)},
        ],
    })
    env = os.environ | {"HOOK_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config",
                                 str(config_path)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: len(_jsonl_ids(alerts)) >= 2 and len(receiver.accepted()) >= 2,
                        120), log.read_text()[-3000:]
        before_rotation = _jsonl_ids(alerts)

        alerts.rename(tmp_path / "alerts.jsonl.1")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None, "SIGHUP must not stop the agent"
        with stream.open("ab") as more:
            more.write(b"".join(lines[3000:6000]))
        assert wait_for(lambda: len(_jsonl_ids(alerts)) >= 2, 120), log.read_text()[-3000:]

        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert 'metasentry_alerts_delivered_total{sink="siem"}' in scraped
        assert 'metasentry_alert_outbox_pending{sink="hook"}' in scraped
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        receiver.stop()
        print(log.read_text()[-3000:])

    config = load_config(config_path, check_environment=False)
    with Store(config.storage_url()) as store:
        siem = store.list_alerts(sink="siem", limit=1000)
        hook = store.list_alerts(sink="hook", limit=1000)
        drift = [i for i in store.list_incidents(limit=1000) if i.kind == "drift"]
    assert len(siem) == len(store_ids := [a.delivery_id for a in siem]) >= 4
    rotated, current = _jsonl_ids(tmp_path / "alerts.jsonl.1"), _jsonl_ids(alerts)
    assert rotated[:len(before_rotation)] == before_rotation
    delivered = [a.delivery_id for a in siem if a.status == "delivered"]
    assert rotated + current == delivered  # once each, in order, nothing lost to the rotation
    assert set(store_ids) - set(delivered) == {a.delivery_id for a in siem
                                               if a.status == "pending"}
    # The webhook is sent drift incidents of medium severity and above: all of them here.
    assert len(hook) == len(drift)
    accepted = receiver.accepted_ids()
    assert len(accepted) == len(set(accepted))
    assert set(accepted) <= {a.delivery_id for a in hook}
    assert receiver.all_verified(KEY.encode())
    assert KEY not in log.read_text()
