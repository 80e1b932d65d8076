"""Two ``metasentry run`` processes in one consumer group on one PostgreSQL: the stream is split
between them, one is killed with SIGKILL mid-stream, the other takes over its pending entries,
and every entry is judged exactly once (or quarantined) with no finding counted twice."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pg_faults import PG_URL
from redis_agents import (
    committed_totals,
    drained,
    group_state,
    run_until,
    sample_entries,
    source_spec,
)

from agent.config import load_config
from agent.service import Agent
from storage import Store
from tests.redis_server import private_stream

REPO = Path(__file__).resolve().parents[2]
RECORDS = 6000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _metric(port: int, name: str) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _findings(store: Store) -> int:
    return sum(i.record_count for i in store.list_incidents(limit=10_000)
               if i.kind in ("attack", "novel"))


def _pending_of(client: Any, key: str, consumer: str) -> int:
    return len(client.xpending_range(key, "agents", "-", "+", 100_000, consumername=consumer))


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
def test_two_replicas_share_a_stream_and_take_over_a_killed_ones_entries(
        write_config: Callable[..., Path], fresh_database: Callable[..., str],
        tmp_path: Path) -> None:
    entries = sample_entries(RECORDS, bad_every=1000)
    with private_stream() as (client, key):
        # What one agent alone finds in these entries: the figure the replicas must match.
        reference_key = f"{key}:reference"
        try:
            pipe = client.pipeline(transaction=False)
            for entry in entries:
                pipe.xadd(reference_key, {"data": entry})
            pipe.execute()
            alone = Agent(load_config(write_config(
                "alone.yaml", live_model=True, **{
                    "sources": [source_spec(reference_key)], "pipeline.batch_size": 200,
                    "storage.url": f"sqlite:///{tmp_path / 'alone.db'}"}), need_token=False))
            alone.prepare()
            alone.attach_configured_sources()
            run_until(alone, lambda: drained(client, reference_key))
            expected_findings = _findings(alone.store)
            alone.close()
        finally:
            client.delete(reference_key)
        assert expected_findings > 0

        url = PG_URL.rsplit("/", 1)[0] + "/" + fresh_database("metasentry_redis_replicas")
        ports = {name: _free_port() for name in ("replica-a", "replica-b")}
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        processes: dict[str, subprocess.Popen[bytes]] = {}
        logs = {name: tmp_path / f"{name}.log" for name in ports}
        client.xgroup_create(key, "agents", id="0", mkstream=True)
        try:
            for name, port in ports.items():
                config = write_config(f"{name}.yaml", live_model=True, **{
                    "storage.url": url, "metrics.enabled": True,
                    "metrics.listen": f"127.0.0.1:{port}", "pipeline.batch_size": 200,
                    "sources": [source_spec(key, consumer=name, claim_idle_s=2.0,
                                            batch_size=200)]})
                with open(logs[name], "wb") as log:
                    processes[name] = subprocess.Popen(
                        [sys.executable, "-m", "agent", "run", "--config", str(config)],
                        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
                deadline = time.monotonic() + 240
                # One at a time: the first creates the model registry's version 1.
                while _metric(port, "metasentry_source_reachable") != 1.0:
                    assert processes[name].poll() is None, logs[name].read_text()[-3000:]
                    assert time.monotonic() < deadline, f"{name} did not start"
                    time.sleep(0.5)

            fed = threading.Event()

            def produce() -> None:  # a live stream: 100 entries every 50 ms
                for start in range(0, len(entries), 100):
                    pipe = client.pipeline(transaction=False)
                    for entry in entries[start:start + 100]:
                        pipe.xadd(key, {"data": entry})
                    pipe.execute()
                    time.sleep(0.05)
                fed.set()

            producer = threading.Thread(target=produce, daemon=True)
            producer.start()

            # Kill replica-a mid-stream, at a moment it holds entries it has not acknowledged.
            victim = processes["replica-a"]
            deadline = time.monotonic() + 120
            while True:
                assert time.monotonic() < deadline, "replica-a never held pending entries"
                state = group_state(client, key)
                if state is not None and (state["entries-read"] or 0) > len(entries) // 4:
                    victim.send_signal(signal.SIGSTOP)
                    if _pending_of(client, key, "replica-a") >= 20:
                        break
                    victim.send_signal(signal.SIGCONT)
                time.sleep(0.01)
            orphaned = _pending_of(client, key, "replica-a")
            victim.send_signal(signal.SIGKILL)
            victim.wait(30)
            producer.join(120)
            assert fed.is_set()

            deadline = time.monotonic() + 240
            while not drained(client, key):
                assert processes["replica-b"].poll() is None, (
                    logs["replica-b"].read_text()[-3000:])
                assert time.monotonic() < deadline, "replica-b did not drain the stream"
                time.sleep(0.2)
            assert _pending_of(client, key, "replica-a") == 0
            # The counter is exported just after the round's acknowledgements: poll briefly.
            deadline = time.monotonic() + 15
            while True:
                claimed = _metric(ports["replica-b"], "metasentry_stream_entries_claimed_total")
                if (claimed is not None and claimed >= orphaned) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert claimed is not None and claimed >= orphaned >= 20
            survivor = processes["replica-b"]
            survivor.send_signal(signal.SIGTERM)
            assert survivor.wait(60) == 0, logs["replica-b"].read_text()[-3000:]
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait(10)

        store = Store(url)
        try:
            totals = committed_totals(store, ["events@replica-a", "events@replica-b"])
            assert all(processed > 0 for processed, _ in totals.values()), (
                f"the stream was split between the replicas: {totals}")
            print(f"committed per replica {totals}; replica-a held {orphaned} when killed, "
                  f"replica-b claimed {claimed}; findings {_findings(store)}")
            judged = sum(processed + rejected for processed, rejected in totals.values())
            assert judged == len(entries), f"every entry judged exactly once: {totals}"
            quarantined = store.list_quarantine(limit=100)
            assert len(quarantined) == len(entries) - RECORDS
            assert len({q.offset_key for q in quarantined}) == len(quarantined)
            assert _findings(store) == expected_findings, "no finding lost or counted twice"
        finally:
            store.close()
