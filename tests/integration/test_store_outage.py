"""A dead or silent database is retried with bounded buffering; nothing is lost or doubled.

The outages are real: the agent talks to PostgreSQL through a TCP relay (tests/integration/
conftest.py) that the test cuts (connections closed, as when a database host goes away) or
blackholes (connections open, nothing forwarded, as when a network drops packets silently).
"""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pg_faults import PG_URL, Relay
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import make_url

from agent.config import AgentConfig, load_config
from agent.datafile import open_file_source
from agent.health import HealthMonitor
from agent.metrics import Metrics
from agent.pipeline import BatchOutcome
from agent.service import Agent
from storage import Store, StoreTimeouts

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nsl-kdd"
#: short enough that a test sees a silent database noticed within seconds
FAST = StoreTimeouts(connect_s=2, statement_s=2, idle_in_transaction_s=5, operation_s=3,
                     ping_s=1, keepalives_idle_s=1, keepalives_interval_s=1, keepalives_count=2,
                     tcp_user_timeout_s=2)


@pytest.mark.postgres
def test_outage_is_retried_and_nothing_is_lost(write_config: Callable[..., Path],
                                               fresh_database: Callable[..., str],
                                               relay: Relay) -> None:
    url = relay.url(fresh_database("metasentry_outage_test"))
    config = load_config(write_config(**{"storage.url": url, "pipeline.batch_size": 500,
                                         "storage.retry_max_backoff_s": 0.5}), need_token=False)
    metrics = Metrics()
    agent = Agent(config, metrics=metrics)
    agent.prepare()
    agent.attach(open_file_source("outage", SAMPLE / "stream.csv.gz",
                                  columns=config.schema.columns, header=False))
    relay.down()
    result: dict[str, object] = {}
    worker = threading.Thread(
        target=lambda: result.setdefault("totals", agent.run_sources(stop_when_exhausted=True)))
    worker.start()

    def retries() -> float:
        return metrics.registry.get_sample_value("metasentry_store_commit_retries_total") or 0.0

    deadline = time.monotonic() + 30
    while retries() < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert retries() >= 3, "commits were retried while the database was down"
    assert metrics.registry.get_sample_value("metasentry_store_buffered_batches") == 1
    assert worker.is_alive(), "the pipeline waits for the database instead of dying"

    relay.up()
    worker.join(120)
    assert not worker.is_alive()
    assert metrics.registry.get_sample_value("metasentry_store_buffered_batches") == 0
    position = agent.store.load_position("outage")
    assert position is not None
    assert position["processed"] + position["rejected"] == 10_000
    assert agent.store.count_incidents().get("drift", 0) >= 8
    print(f"\noutage: records 10000, processed {position['processed']}, quarantined "
          f"{position['rejected']}, retries {retries():.0f}")
    agent.close()


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _wait_until(predicate: Callable[[], bool], timeout_s: float) -> float | None:
    """Seconds until ``predicate`` held, or None if it never did within ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def _when_each(signs: dict[str, Callable[[], bool]], *, since: float,
               timeout_s: float) -> dict[str, float | None]:
    """Seconds after ``since`` at which each sign first held (None: not within the timeout)."""
    seen: dict[str, float | None] = dict.fromkeys(signs)
    while None in seen.values() and time.monotonic() - since < timeout_s:
        for name, sign in signs.items():
            if seen[name] is None and sign():
                seen[name] = round(time.monotonic() - since, 1)
        time.sleep(0.05)
    return seen


def _agent_through(relay: Relay, config: AgentConfig, metrics: Metrics) -> Agent:
    """An agent whose store talks through the relay with FAST timeouts."""
    agent = Agent(config, metrics=metrics)
    agent.store.close()
    agent.store = Store(config.storage_url(), timeouts=FAST)
    agent.readiness_timeout_s = 1.0
    agent.prepare()
    return agent


@pytest.mark.postgres
def test_a_blackholed_database_is_noticed_and_nothing_is_lost_or_doubled(
        write_config: Callable[..., Path], fresh_database: Callable[..., str],
        relay: Relay) -> None:
    url = relay.url(fresh_database("metasentry_blackhole_test"))
    config = load_config(write_config(**{"storage.url": url, "pipeline.batch_size": 500,
                                         "storage.retry_max_backoff_s": 0.5}), need_token=False)
    metrics = Metrics()
    agent = _agent_through(relay, config, metrics)
    agent.attach(open_file_source("blackhole", SAMPLE / "stream.csv.gz",
                                  columns=config.schema.columns, header=False))
    monitor = HealthMonitor(agent, interval_s=0.2)
    monitor.start()
    blackholed_at: list[float] = []

    def blackhole_after_three_batches(outcome: BatchOutcome) -> None:
        if agent.totals.received >= 1500 and not blackholed_at:
            relay.blackhole()  # from the pipeline thread: the next commit is the one that hangs
            blackholed_at.append(time.monotonic())

    worker = threading.Thread(target=agent.run_sources,
                              kwargs={"stop_when_exhausted": True,
                                      "on_batch": blackhole_after_three_batches})
    worker.start()
    assert _wait_until(lambda: bool(blackholed_at), 60) is not None

    # Nobody calls /readyz: the agent's own timer has to notice, and so do the commit metrics.
    signs = {
        "ready_0": lambda: _sample(metrics, "metasentry_ready") == 0,
        "in_flight_age_over_1s":
            lambda: _sample(metrics, "metasentry_batch_in_flight_age_seconds") > 1,
        "first_retry": lambda: _sample(metrics, "metasentry_store_commit_retries_total") >= 1,
        "buffered_1": lambda: _sample(metrics, "metasentry_store_buffered_batches") == 1,
    }
    seen = _when_each(signs, since=blackholed_at[0], timeout_s=20)
    assert None not in seen.values(), f"trouble not visible during the blackhole: {seen}"
    time.sleep(max(0.0, 8 - (time.monotonic() - blackholed_at[0])))  # a blackhole of 8 s
    assert worker.is_alive(), "the pipeline waits for the database instead of dying"
    assert _sample(metrics, "metasentry_batch_in_flight_age_seconds") > 4

    relay.heal()
    healed_at = time.monotonic()
    worker.join(120)
    assert not worker.is_alive()
    back = _wait_until(lambda: _sample(metrics, "metasentry_ready") == 1, 20)
    monitor.stop()
    assert back is not None, "ready again after the blackhole"
    assert _sample(metrics, "metasentry_batch_in_flight_age_seconds") == 0
    assert _sample(metrics, "metasentry_store_buffered_batches") == 0
    assert _sample(metrics, "metasentry_last_commit_timestamp_seconds") > time.time() - 120

    # Nothing lost: every record of the stream is accounted for, as processed or quarantined;
    # nothing doubled: the database holds exactly what the agent counted once.
    store = agent.store
    position = store.load_position("blackhole")
    assert position is not None
    assert position["processed"] + position["rejected"] == 10_000
    assert position["processed"] == _sample(metrics, "metasentry_records_processed_total",
                                            source="blackhole")
    rejected = sum(store.count_quarantine().values())
    assert rejected == position["rejected"]
    incidents = sum(store.count_incidents().values())
    counted = sum(s.value for s in metrics.incidents.collect()[0].samples
                  if s.name.endswith("_total"))
    assert incidents == counted and incidents >= 8
    reports = len(store.list_drift_reports(limit=10_000))
    assert reports == _sample(metrics, "metasentry_drift_windows_total", detector="feature_drift")
    print(f"\nblackhole: records 10000, processed {position['processed']}, quarantined "
          f"{rejected}, incidents {incidents}, drift reports {reports}, retries "
          f"{_sample(metrics, 'metasentry_store_commit_retries_total'):.0f}; detected after "
          f"{seen}; caught up {time.monotonic() - healed_at:.1f}s after healing")
    agent.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(metrics_url: str) -> dict[str, float]:
    """Every sample on /metrics, keyed by name (labels left out: these are one per name)."""
    try:
        text = httpx.get(f"{metrics_url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    return {family.name if sample.name == family.name else sample.name: sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _start_agent(config_path: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "agent", "run", "--config",
                                 str(config_path)], stdout=out, stderr=subprocess.STDOUT,
                                env=os.environ | {"METASENTRY_API_TOKEN": "unused"})


@pytest.mark.postgres
def test_sigterm_during_a_hung_commit_exits_within_the_budget(
        write_config: Callable[..., Path], fresh_database: Callable[..., str], relay: Relay,
        tmp_path: Path) -> None:
    database = fresh_database("metasentry_sigterm_test")
    with gzip.open(SAMPLE / "stream.csv.gz", "rt") as sample:
        lines = [next(sample) for _ in range(2000)]
    stream = tmp_path / "stream.csv"
    stream.write_text("".join(lines[:1000]))
    port = _free_port()
    budget = 3
    config_path = write_config(**{
        "storage.url": relay.url(database), "sources.0.path": str(stream),
        "sources.0.mode": "follow", "pipeline.batch_size": 500,
        "pipeline.shutdown_timeout_s": budget, "metrics.enabled": True,
        "metrics.listen": f"127.0.0.1:{port}",
    })
    metrics_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "agent.log"
    proc = _start_agent(config_path, log)
    try:
        assert _wait_until(lambda: _scrape(metrics_url).get(
            "metasentry_records_received_total") == 1000, 120) is not None, "first 1000 in"

        relay.blackhole()
        blackholed_at = time.monotonic()
        with stream.open("a") as out:
            out.write("".join(lines[1000:]))
        seen = _when_each({
            "in_flight_age_over_1s": lambda: _scrape(metrics_url).get(
                "metasentry_batch_in_flight_age_seconds", 0) > 1,
            "ready_0": lambda: _scrape(metrics_url).get("metasentry_ready") == 0,
        }, since=blackholed_at, timeout_s=30)
        assert None not in seen.values(), f"the hung commit is not visible: {seen}"

        proc.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        code = proc.wait(budget + 30)
        took = time.monotonic() - stopping
        assert code == 1, "a batch left uncommitted is not a clean stop"
        assert took < budget + 6, f"stopping took {took:.1f}s against a {budget}s budget"
        assert "did not finish within 3s; it will be replayed" in log.read_text()

        # The batch that hung is replayed by the next start, once the network is back.
        relay.heal()
        proc = _start_agent(config_path, log)
        direct = Store(make_url(PG_URL).set(database=database).render_as_string(False))
        caught_up = _wait_until(lambda: ((direct.load_position("nsl-kdd-sample") or {})
                                         .get("processed", 0) == 2000), 120)
        assert caught_up is not None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert sum(direct.count_quarantine().values()) == 0
        final = direct.load_position("nsl-kdd-sample") or {}
        print(f"\nsigterm: detected after {seen}; exit {code} {took:.1f}s after SIGTERM "
              f"(budget {budget}s); 2000 records written, after the restart processed "
              f"{final.get('processed')}, quarantined {final.get('rejected')}")
        direct.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        print(log.read_text()[-3000:])
