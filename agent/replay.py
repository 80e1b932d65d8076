"""``metasentry replay``: a finite file through the same pipeline, store and detectors as ``run``.

Useful to backfill a day of traffic, to test a config before deploying it, and to measure
throughput. Offsets are committed like a live source's, so an interrupted replay resumes
where it stopped and never creates an incident twice.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import AgentConfig
from agent.datafile import open_file_source
from agent.pipeline import BatchOutcome
from agent.service import Agent, default_source_name, tune_garbage_collector


class _Progress:
    """A one-line progress display on a terminal (stderr), redrawn at most 5 times a second."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.records = 0
        self.incidents = 0
        self._drawn = 0.0

    def __call__(self, outcome: BatchOutcome) -> None:
        self.records += outcome.received
        self.incidents += sum(outcome.incidents.values())
        now = time.perf_counter()
        if now - self._drawn >= 0.2:
            self._drawn = now
            rate = self.records / max(now - self.started, 1e-9)
            sys.stderr.write(f"\r{self.records:>10,} records  {rate:>9,.0f}/s  "
                             f"{self.incidents:>5} incidents")
            sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def replay_file(config: AgentConfig, path: Path, *, limit: int | None = None,
                source_name: str | None = None, progress: bool = False,
                tune_gc: bool = False) -> dict[str, Any]:
    """Replay ``path`` to its end (or ``limit`` records) and return the summary.

    ``tune_gc`` applies the daemon's garbage-collector settings (the CLI sets it; a library
    caller keeps its interpreter's defaults).
    """
    agent = Agent(config)
    started = time.perf_counter()
    try:
        agent.prepare()
        if tune_gc:
            tune_garbage_collector()
        name = source_name or default_source_name(path)
        header = True
        columns = None
        if config.schema.columns is not None:
            columns, header = config.schema.columns, False
        agent.attach(open_file_source(name, path, columns=columns, header=header,
                                      max_record_bytes=config.schema.max_record_bytes))
        show = _Progress() if progress else None
        totals = agent.run_sources(stop_when_exhausted=True, limit=limit, on_batch=show)
        if show is not None:
            show.close()
        if limit is not None:  # a limited replay still tests the window it filled
            totals.windows_tested += agent.pipeline.test_windows() if agent.pipeline else 0
        processed, rejected = agent.pipeline.totals(name) if agent.pipeline else (0, 0)
    finally:
        agent.close()
    elapsed = time.perf_counter() - started
    latencies = np.asarray(totals.batch_seconds or [0.0]) * 1000
    return {
        "source": name,
        "path": str(path),
        "records": totals.received,
        "processed": totals.processed,
        "rejected": dict(totals.rejected),
        "incidents": dict(totals.incidents),
        "duplicates_skipped": totals.duplicates,
        "windows_tested": totals.windows_tested,
        "elapsed_s": elapsed,
        "records_per_s": totals.received / elapsed if elapsed > 0 else 0.0,
        "batch_p50_ms": float(np.percentile(latencies, 50)),
        "batch_p95_ms": float(np.percentile(latencies, 95)),
        "committed_total": {"processed": processed, "rejected": rejected},
    }
