"""Scheduled jobs: failures are counted and survived, jobs never overlap, retention purges."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from agent.config import load_config
from agent.metrics import Metrics
from agent.scheduler import build_scheduler, guarded
from agent.service import Agent
from storage import NewIncident


def _value(metrics: Metrics, name: str, job: str) -> float:
    return metrics.registry.get_sample_value(name, {"job": job}) or 0.0


def test_a_failing_job_is_counted_and_the_scheduler_keeps_running() -> None:
    metrics = Metrics()
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) % 2:
            raise RuntimeError("boom")

    scheduler = BackgroundScheduler(job_defaults={"max_instances": 1, "coalesce": True})
    scheduler.add_job(guarded("flaky", flaky, metrics), "interval", seconds=0.05)
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        scheduler.shutdown(wait=True)
    assert len(calls) >= 4
    runs = _value(metrics, "metasentry_scheduler_job_runs_total", "flaky")
    failures = _value(metrics, "metasentry_scheduler_job_failures_total", "flaky")
    assert runs == len(calls) and failures == (len(calls) + 1) // 2
    assert _value(metrics, "metasentry_scheduler_job_last_success_timestamp_seconds",
                  "flaky") > 0


def test_a_slow_job_never_overlaps_itself() -> None:
    metrics = Metrics()
    running = threading.Semaphore(1)
    overlaps: list[int] = []
    done: list[int] = []

    def slow() -> None:
        if not running.acquire(blocking=False):
            overlaps.append(1)
            return
        time.sleep(0.3)
        running.release()
        done.append(1)

    scheduler = BackgroundScheduler(job_defaults={"max_instances": 1, "coalesce": True})
    scheduler.add_job(guarded("slow", slow, metrics), "interval", seconds=0.05)
    scheduler.start()
    time.sleep(1.2)
    scheduler.shutdown(wait=True)
    assert done and not overlaps


def test_agent_jobs_purge_old_rows_and_checkpoint(write_config: Callable[..., Path]) -> None:
    config = load_config(write_config(**{"retention.days": 1,
                                         "scheduler.retention_interval_s": 3600}),
                         need_token=False)
    agent = Agent(config)
    agent.prepare()
    old = datetime.now(UTC) - timedelta(days=3)
    agent.store.commit_batch(source="s", position=None, incidents=[
        NewIncident(kind="drift", severity="low", source="s", offset_key="old", detector="d",
                    created_at=old),
        NewIncident(kind="drift", severity="low", source="s", offset_key="new", detector="d"),
    ])
    scheduler = build_scheduler(agent)
    assert {job.id for job in scheduler.get_jobs()} == {"drift_test", "retention",
                                                        "wal_checkpoint"}
    scheduler.start()
    try:
        deadline = time.monotonic() + 15  # retention runs once shortly after start
        while agent.store.count_incidents().get("drift") != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        scheduler.shutdown(wait=True)
    assert [i.offset_key for i in agent.store.list_incidents()] == ["new"]
    assert _value(agent.metrics, "metasentry_scheduler_job_failures_total", "retention") == 0
    agent.close()
