"""Agents reading a Redis stream: configs, a stream of real NSL-KDD records, and waiting for a
consumer group to drain. Shared by the pipeline and the two-replica tests."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.service import Agent, RunTotals
from storage import Store
from tests.redis_server import REDIS_URL

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nsl-kdd"
BAD_LINES = ["not,enough,columns", "0,tcp,http,SF,abc," + ",".join(["0"] * 36) + ",normal,21"]
GROUP = "agents"


def source_spec(key: str, **overrides: Any) -> dict[str, Any]:
    """A ``sources:`` entry reading CSV lines of field ``data`` from ``key``."""
    return {"type": "redis_stream", "name": "events", "url": REDIS_URL, "stream": key,
            "group": GROUP, "consumer": "replica-1", "field": "data", "format": "csv",
            "start_id": "0", "block_ms": 100, "claim_idle_s": 2.0} | overrides


def sample_entries(count: int, *, bad_every: int = 0) -> list[str]:
    """``count`` real records of the bundled stream, and a bad line after every
    ``bad_every``th (none when 0)."""
    lines = gzip.open(SAMPLE / "stream.csv.gz", "rt").read().splitlines()[:count]
    entries: list[str] = []
    for index, line in enumerate(lines):
        entries.append(line)
        if bad_every and index % bad_every == bad_every - 1:
            entries.append(BAD_LINES[(index // bad_every) % len(BAD_LINES)])
    return entries


def started_agent(config_path: Path) -> Agent:
    """An agent built from ``config_path``, prepared, with its configured sources attached."""
    agent = Agent(load_config(config_path, need_token=False))
    agent.prepare()
    agent.attach_configured_sources()
    return agent


def fill_stream(client: Any, key: str, count: int, *, bad_every: int = 0) -> int:
    """Add ``count`` real records (and a bad line after every ``bad_every``th); returns the
    number of entries added."""
    entries = sample_entries(count, bad_every=bad_every)
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        pipe.xadd(key, {"data": entry})
    pipe.execute()
    return len(entries)


def group_state(client: Any, key: str) -> dict[str, Any] | None:
    """The group's ``XINFO GROUPS`` entry, or ``None`` before it exists."""
    try:
        groups = client.xinfo_groups(key)
    except Exception:  # noqa: BLE001 - the stream does not exist yet
        return None
    return next((g for g in groups if g["name"] == GROUP.encode()), None)


def drained(client: Any, key: str) -> bool:
    """Every entry delivered to the group and acknowledged."""
    state = group_state(client, key)
    return state is not None and state["lag"] == 0 and state["pending"] == 0


def run_until(agent: Agent, done: Callable[[], bool], timeout_s: float = 180) -> RunTotals:
    """Run the agent's fetch loop in this thread until ``done()`` (polled by a watcher)."""
    deadline = time.monotonic() + timeout_s

    def watch() -> None:
        while not agent.stop_event.is_set():
            if done() or time.monotonic() > deadline:
                agent.stop_event.set()
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    totals = agent.run_sources(stop_when_exhausted=False)
    watcher.join(5)
    assert time.monotonic() <= deadline, "the stream was not drained in time"
    return totals


def committed_totals(store: Store, names: list[str]) -> dict[str, tuple[int, int]]:
    """(processed, rejected) each replica's committed position says, by position name."""
    out = {}
    for name in names:
        position = store.load_position(name) or {}
        out[name] = (int(position.get("processed", 0)), int(position.get("rejected", 0)))
    return out
