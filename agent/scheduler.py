"""Periodic work on APScheduler 3.x: drift tests on a timer, retention, SQLite checkpoints,
and, with the live model, picking up new model versions and adapting to pending labels.

Each job is wrapped so that a failure is logged and counted and never reaches the scheduler
thread (a dead job thread would silently stop all periodic work), and so that runs, failures
and the time of the last success are visible in metrics. ``max_instances=1`` and
``coalesce=True`` keep a slow job from overlapping itself or piling up missed runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from agent.metrics import Metrics
from agent.service import Agent

log = logging.getLogger(__name__)


def guarded(name: str, job: Callable[[], object], metrics: Metrics) -> Callable[[], None]:
    """Run ``job``, counting the run and its outcome; never raise."""

    def run() -> None:
        metrics.job_runs.labels(name).inc()
        started = time.perf_counter()
        try:
            result = job()
        except Exception:
            metrics.job_failures.labels(name).inc()
            log.exception("scheduled job %s failed", name)
            return
        metrics.job_last_success.labels(name).set_to_current_time()
        log.debug("scheduled job %s done in %.3fs: %s", name, time.perf_counter() - started, result)

    run.__name__ = f"job_{name}"
    return run


def build_scheduler(agent: Agent) -> BackgroundScheduler:
    """The agent's scheduler with every periodic job, not yet started."""
    cfg = agent.config.scheduler
    scheduler = BackgroundScheduler(timezone=UTC,
                                    job_defaults={"coalesce": True, "max_instances": 1,
                                                  "misfire_grace_time": 30})
    jobs: dict[str, tuple[Callable[[], object], float]] = {
        "drift_test": (lambda: agent.pipeline.test_windows() if agent.pipeline else 0,
                       cfg.drift_test_interval_s),
        "retention": (lambda: agent.store.purge_older_than(agent.config.retention.days),
                      cfg.retention_interval_s),
    }
    if agent.store.dialect == "sqlite":
        jobs["wal_checkpoint"] = (agent.store.checkpoint, cfg.checkpoint_interval_s)
    runtime, adapter = agent.runtime, agent.adapter
    if runtime is not None and adapter is not None:
        # Another replica (or `metasentry adapt`, `models activate`) may activate a version;
        # labels given with the CLI reach this process through the database.
        jobs["model_refresh"] = (runtime.refresh, agent.config.model.poll_interval_s)
        jobs["adaptation_check"] = (lambda: adapter.run_if_ready("labels: scheduled check"),
                                    agent.config.adaptation.check_interval_s)
    first_run = datetime.now(UTC) + timedelta(seconds=1)
    for name, (job, interval) in jobs.items():
        metrics = agent.metrics
        metrics.job_runs.labels(name)  # export the series at 0 before the first run
        metrics.job_failures.labels(name)
        # Retention runs once at start too: an agent restarted daily would otherwise never purge.
        extra = {"next_run_time": first_run} if name == "retention" else {}
        scheduler.add_job(guarded(name, job, metrics), "interval", seconds=interval, id=name,
                          name=name, **extra)
    return scheduler
