"""A Redis stream through the agent's pipeline and store: acknowledgement after the commit,
a crash in between, poison entries, dead letters, the exported figures, and a Redis outage."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_faults import Relay
from redis_agents import (
    committed_totals,
    drained,
    fill_stream,
    group_state,
    run_until,
    source_spec,
    started_agent,
)

from adapters import RedisStreamSource
from agent.health import HealthMonitor
from agent.service import Agent
from tests.redis_server import REDIS_TARGET, private_stream, url_through

pytestmark = pytest.mark.redis

POSITION = "events@replica-1"


@pytest.fixture
def stream() -> Iterator[tuple[Any, str]]:
    with private_stream() as (client, key):
        yield client, key


class Crash(BaseException):
    """kill -9 of the process, at the point the test chooses."""


def the_source(agent: Agent) -> RedisStreamSource:
    source = agent.sources[0]
    assert isinstance(source, RedisStreamSource)
    return source


def sample(agent: Agent, name: str, **labels: str) -> float | None:
    return agent.metrics.registry.get_sample_value(name, labels)


def record_findings(agent: Agent) -> dict[str, int]:
    """Findings per kind, as the stored (grouped) incidents count them."""
    counts: dict[str, int] = {}
    for incident in agent.store.list_incidents(limit=10_000):
        if incident.kind in ("attack", "novel"):
            counts[incident.kind] = counts.get(incident.kind, 0) + incident.record_count
    return counts


def test_a_crash_between_commit_and_ack_replays_nothing_twice(
        write_config: Callable[..., Path], stream: tuple[Any, str], tmp_path: Path) -> None:
    """The committed batch is delivered again after the restart and acknowledged unjudged: the
    totals, the quarantine and the per-record incidents equal those of a run without a crash."""
    client, key = stream
    total = fill_stream(client, key, 3000, bad_every=700)
    clean_key = key + ":clean"
    fill_stream(client, clean_key, 3000, bad_every=700)
    try:
        clean = started_agent(write_config(
            "clean.yaml", live_model=True, **{
                "sources": [source_spec(clean_key)], "pipeline.batch_size": 250,
                "storage.url": f"sqlite:///{tmp_path / 'clean.db'}"}))
        run_until(clean, lambda: drained(client, clean_key))
        clean_findings = record_findings(clean)
        clean.close()
    finally:
        client.delete(clean_key)
    assert sum(clean_findings.values()) > 0, "the sample holds attacks the model flags"

    config_path = write_config(live_model=True, **{"sources": [source_spec(key)],
                                                   "pipeline.batch_size": 250})
    agent = started_agent(config_path)
    source = the_source(agent)
    acks = 0
    real_ack = source.ack

    def ack_then_die(batch: Any) -> None:
        nonlocal acks
        acks += 1
        if acks == 4:  # the fourth batch is committed; the process dies before XACK
            raise Crash()
        real_ack(batch)

    source.ack = ack_then_die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        agent.run_sources(stop_when_exhausted=False)
    state = group_state(client, key)
    assert state is not None and state["pending"] == 250, "the committed batch is unacknowledged"
    agent.store.close()  # the process is gone: nothing else of it runs

    restarted = started_agent(config_path)
    run_until(restarted, lambda: drained(client, key))
    processed, rejected = committed_totals(restarted.store, [POSITION])[POSITION]
    assert processed + rejected == total, "every entry judged exactly once over both runs"
    assert rejected == sum(restarted.store.count_quarantine().values()) == 4
    assert sample(restarted, "metasentry_stream_entries_redelivered_total", source="events") == 250
    assert record_findings(restarted) == clean_findings, "no finding counted twice"
    restarted.close()


def test_a_round_that_only_acknowledges_updates_the_counters(
        write_config: Callable[..., Path], stream: tuple[Any, str]) -> None:
    """The last batch is committed and the process dies before XACK: after the restart no
    batch is judged at all, yet the redelivered counter says at once what was acknowledged
    (not only at the health thread's next round)."""
    client, key = stream
    fill_stream(client, key, 500)
    config_path = write_config(live_model=True, **{"sources": [source_spec(key)],
                                                   "pipeline.batch_size": 250})
    agent = started_agent(config_path)
    source = the_source(agent)
    real_ack = source.ack

    def ack_all_but_the_last(batch: Any) -> None:
        if group_state(client, key)["lag"] == 0:  # type: ignore[index]
            raise Crash()
        real_ack(batch)

    source.ack = ack_all_but_the_last  # type: ignore[method-assign]
    with pytest.raises(Crash):
        agent.run_sources(stop_when_exhausted=False)
    agent.store.close()

    restarted = started_agent(config_path)
    totals = run_until(restarted, lambda: drained(client, key))
    assert totals.received == 0, "the committed batch is not judged again"
    assert sample(restarted, "metasentry_stream_entries_redelivered_total",
                  source="events") == 250
    restarted.close()


def test_poison_entries_are_quarantined_once_and_acknowledged(
        write_config: Callable[..., Path], stream: tuple[Any, str]) -> None:
    client, key = stream
    client.xadd(key, {"data": "0,tcp,http,SF," + ",".join(["0"] * 37) + ",normal,21"})
    client.xadd(key, {"data": "this,is,not,a,record"})
    client.xadd(key, {"other": "no data field at all"})
    config_path = write_config(**{"sources": [source_spec(key)]})
    for _ in range(2):  # the second run finds nothing left to judge
        agent = started_agent(config_path)
        run_until(agent, lambda: drained(client, key))
        quarantined = agent.store.list_quarantine(limit=10)
        assert sorted((q.reason, q.source) for q in quarantined) == [
            ("csv_columns", "events"), ("missing_field", "events")]
        assert "expected 43 cells, got 5" in {q.detail for q in quarantined}
        agent.close()
    assert client.xpending(key, "agents")["pending"] == 0


def test_an_entry_delivered_too_often_is_quarantined_and_dead_lettered(
        write_config: Callable[..., Path], stream: tuple[Any, str]) -> None:
    client, key = stream
    fill_stream(client, key, 5)
    client.xgroup_create(key, "agents", id="0")
    # A replica of the same name read the first two entries and died: one delivery each.
    client.xreadgroup("agents", "replica-1", {key: ">"}, count=2)
    config_path = write_config(**{"sources": [source_spec(key, max_deliveries=1)]})
    agent = started_agent(config_path)
    run_until(agent, lambda: drained(client, key))
    quarantined = agent.store.list_quarantine(limit=10)
    assert [q.reason for q in quarantined] == ["max_deliveries", "max_deliveries"]
    assert "delivered 2 times, more than max_deliveries=1" in quarantined[0].detail
    letters = client.xrange(f"{key}:dead")
    assert [fields[b"metasentry.reason"] for _, fields in letters] == [b"max_deliveries"] * 2
    assert {fields[b"metasentry.id"].decode() for _, fields in letters} == {
        q.offset_key for q in quarantined}
    assert sample(agent, "metasentry_stream_entries_dead_lettered_total", source="events") == 2
    assert sample(agent, "metasentry_records_rejected_total", source="events",
                  reason="max_deliveries") == 2
    assert committed_totals(agent.store, [POSITION])[POSITION] == (3, 2)
    agent.close()


def test_each_drift_window_names_the_replica_that_tested_it(
        write_config: Callable[..., Path], stream: tuple[Any, str]) -> None:
    # Replicas keep windows of their own: a report says whose window it was.
    client, key = stream
    fill_stream(client, key, 2500)
    agent = started_agent(write_config(**{"sources": [source_spec(key)]}))
    run_until(agent, lambda: drained(client, key))
    agent.pipeline.test_windows()  # the partial window too (the timer's path)
    reports = agent.store.list_drift_reports(source="events")
    assert len(reports) >= 3
    assert {(r.window_span or {}).get("replica") for r in reports} == {POSITION}
    agent.close()


def test_the_backlog_figures_are_exported(write_config: Callable[..., Path],
                                          stream: tuple[Any, str]) -> None:
    client, key = stream
    ids = [client.xadd(key, {"data": line}) for line in [
        "0,tcp,http,SF," + ",".join(["0"] * 37) + ",normal,21"] * 1000]
    config_path = write_config(**{"sources": [source_spec(key)], "pipeline.batch_size": 250})
    agent = started_agent(config_path)
    agent.run_sources(stop_when_exhausted=False, limit=250)
    source = the_source(agent)
    # A batch handed out and not yet committed, as when the pipeline is mid-batch.
    in_flight = source.fetch(100, 0.5)
    source.refresh_stats()
    HealthMonitor(agent).refresh()
    figures = {name: sample(agent, f"metasentry_stream_{name}", source="events") for name in (
        "pending_entries", "group_lag_entries", "entries_read_total", "entries_acked_total",
        "entries_claimed_total", "entries_dead_lettered_total")}
    assert figures == {"pending_entries": 100, "group_lag_entries": 650,
                       "entries_read_total": 350, "entries_acked_total": 250,
                       "entries_claimed_total": 0, "entries_dead_lettered_total": 0}
    assert sample(agent, "metasentry_source_reachable", source="events") == 1
    oldest_ms = int(ids[250].decode().split("-")[0])
    age = sample(agent, "metasentry_stream_oldest_pending_age_seconds", source="events")
    assert age is not None and abs(age - (time.time() - oldest_ms / 1000)) < 2
    assert agent.readiness()["sources_reachable"] is True
    source.ack(in_flight)
    source.refresh_stats()
    HealthMonitor(agent).refresh()
    assert sample(agent, "metasentry_stream_pending_entries", source="events") == 0
    assert sample(agent, "metasentry_stream_oldest_pending_age_seconds", source="events") == 0
    agent.close()


def test_a_redis_outage_mid_stream_is_retried_and_nothing_is_lost(
        write_config: Callable[..., Path], stream: tuple[Any, str],
        caplog: pytest.LogCaptureFixture) -> None:
    client, key = stream
    total = fill_stream(client, key, 4000)
    relay = Relay(REDIS_TARGET)
    relay.up()
    spec = source_spec(key, url=url_through(relay.port), batch_size=200)
    agent = started_agent(write_config(**{"sources": [spec], "pipeline.batch_size": 200}))
    source = the_source(agent)
    seen: dict[str, Any] = {"unready": False, "held": 0, "cut": False}

    def outage() -> None:
        while not agent.stop_event.is_set():
            state = group_state(client, key)
            if state is not None and state["entries-read"] and state["entries-read"] > 1000:
                break
            time.sleep(0.02)
        relay.down()
        seen["cut"] = True
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            checks = agent.readiness()
            seen["unready"] |= checks.get("sources_reachable") is False
            seen["held"] = max(seen["held"], source.unacknowledged)
            time.sleep(0.05)
        relay.up()

    cutter = threading.Thread(target=outage, daemon=True)
    cutter.start()
    try:
        with caplog.at_level(logging.INFO, logger="adapters"):
            run_until(agent, lambda: seen["cut"] and drained(client, key))
    finally:
        cutter.join(10)
        relay.down()
    processed, rejected = committed_totals(agent.store, [POSITION])[POSITION]
    assert processed + rejected == total, "nothing lost, nothing judged twice"
    assert seen["unready"], "readiness showed the outage"
    assert seen["held"] <= 200, "at most one batch held while Redis was away"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "unreachable" in w]) == 1, warnings
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert agent.readiness()["sources_reachable"] is True
    agent.close()
