"""Outages on the scale-out paths, measured: nothing lost, nothing doubled, ingestion resumes by
itself, and a metric shows each outage while it lasts.

* Redis *restarted* mid-stream (a private ``redis-server`` with an append-only file, stopped
  with SIGTERM and started again on the same port), with a producer writing after the restart;
* the alert webhook's target down (connections refused) while a stream is ingested, then back;
* one of two replicas' PostgreSQL connection hung (a relay that stops forwarding), while the
  other replica goes on reading the shared stream.

Each test prints one ``OUTAGE`` line with its figures (the table in docs/RELIABILITY.md comes
from them) and asserts ``lost == 0`` and ``duplicated == 0``. The outages last
``METASENTRY_OUTAGE_S`` seconds (6 by default; set 60 for the minute the issue names).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from outage_harness import OUTAGE_S, Figures, OwnRedis, Watch
from pg_faults import PG_URL, Relay
from redis_agents import (
    committed_totals,
    drained,
    fill_stream,
    run_until,
    sample_entries,
    source_spec,
)

from agent.config import AgentConfig, load_config
from agent.delivery import DeliveryWorker, build_sinks
from agent.health import HealthMonitor
from agent.metrics import Metrics
from agent.service import Agent, wait_for
from storage import Store, StoreTimeouts
from tests.redis_server import private_stream
from tests.webhook_receiver import Receiver

HOOK_KEY = "outage-hook-key-5c1d"
#: a silent database noticed within seconds (the production defaults are in docs/RELIABILITY.md)
FAST = StoreTimeouts(connect_s=2, statement_s=2, idle_in_transaction_s=5, operation_s=3,
                     ping_s=1, keepalives_idle_s=1, keepalives_interval_s=1, keepalives_count=2,
                     tcp_user_timeout_s=2)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def total(metrics: Metrics, family: str, **labels: str) -> float:
    """The sum of a labelled counter's ``_total`` samples that match ``labels``."""
    return sum(s.value for f in metrics.registry.collect() if f.name == family
               for s in f.samples if s.name.endswith("_total")
               and all(s.labels.get(k) == v for k, v in labels.items()))


def start_agent(config: AgentConfig, metrics: Metrics | None = None,
                store: Store | None = None) -> Agent:
    agent = Agent(config, metrics=metrics or Metrics())
    if store is not None:  # the store of a replica reached through a relay, with FAST timeouts
        agent.store.close()
        agent.store = store
        agent.readiness_timeout_s = 1.0
    agent.prepare()
    agent.attach_configured_sources()
    return agent


def quarantine_rows(store: Store) -> tuple[int, int]:
    """(rows, distinct offset keys) of the quarantine: equal when nothing was doubled."""
    rows = store.list_quarantine(limit=10_000)
    return len(rows), len({(q.source, q.offset_key) for q in rows})


# ----------------------------------------------------------------------------- Redis restart


@pytest.mark.redis
@pytest.mark.slow
def test_a_redis_restart_mid_stream_loses_and_doubles_nothing(
        write_config: Callable[..., Path], tmp_path: Path) -> None:
    server = OwnRedis(tmp_path).start()
    try:
        _restart_mid_stream(server, write_config)
    finally:
        server.stop()


def _restart_mid_stream(server: OwnRedis, write_config: Callable[..., Path]) -> None:
    key = "metasentry:outage:restart"
    client: Any = server.client()
    sent = fill_stream(client, key, 3000, bad_every=500)
    agent = start_agent(load_config(write_config(**{
        "sources": [source_spec(key, url=server.url, batch_size=200)],
        "pipeline.batch_size": 200}), need_token=False))
    monitor = HealthMonitor(agent, interval_s=0.2)
    monitor.start()
    state: dict[str, Any] = {"done": False, "down_s": 0.0, "after": 0, "during": 0,
                             "before": 0, "signs": {}}
    signs = {
        "source_reachable_0": lambda: sample(agent.metrics, "metasentry_source_reachable",
                                             source="events") == 0,
        "not_ready": lambda: agent.readiness().get("sources_reachable") is False,
    }
    watch = Watch(signs)

    def stop_after_five_batches(_outcome: object) -> None:
        # From the pipeline thread, so the stop falls at a known point of the stream.
        if agent.totals.received >= 1000 and not state["before"]:
            state["before"] = agent.totals.received
            watch.__enter__()
            state["stopped_at"] = time.monotonic()
            server.stop()
            threading.Thread(target=come_back, daemon=True).start()

    def come_back() -> None:
        nonlocal client
        time.sleep(OUTAGE_S)
        state["during"] = agent.totals.received - state["before"]
        server.start()
        state["down_s"] = time.monotonic() - state["stopped_at"]
        wait_for(lambda: sample(agent.metrics, "metasentry_source_reachable",
                                source="events") == 1, 60)
        watch.__exit__()
        state["signs"] = watch.seen
        client = server.client()  # the producer comes back too, and writes more
        state["after"] = fill_stream(client, key, 1000, bad_every=500)
        state["done"] = True

    def stop_when_drained() -> None:
        deadline = time.monotonic() + 180
        while not (state["done"] and drained(client, key)) and time.monotonic() < deadline:
            time.sleep(0.05)
        agent.stop_event.set()

    threading.Thread(target=stop_when_drained, daemon=True).start()
    try:
        agent.run_sources(stop_when_exhausted=False, on_batch=stop_after_five_batches)
    finally:
        monitor.stop()
    assert state["done"] and drained(client, key), "the stream was drained after the restart"
    sent += state["after"]
    processed, rejected = committed_totals(agent.store, ["events@replica-1"])["events@replica-1"]
    rows, distinct = quarantine_rows(agent.store)
    agent.close()
    figures = Figures("Redis restarted mid-stream", sent, processed, rejected,
                      processed + rejected + rows - distinct, state["down_s"],
                      f"read before the restart {state['before']} of {sent - state['after']}, "
                      f"while down {state['during']}; seen {state['signs']}")
    print("\n" + figures.line())
    assert figures.lost == 0 and figures.duplicated == 0, figures.line()
    assert rows == rejected
    assert 0 < state["before"] < sent - state["after"], "the restart fell mid-stream"
    assert None not in state["signs"].values(), f"the outage was not visible: {state['signs']}"


# -------------------------------------------------------------------------- webhook down


@pytest.mark.slow
def test_a_webhook_target_down_gets_every_alert_once_and_never_blocks_ingestion(
        write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTAGE_HOOK_KEY", HOOK_KEY)
    receiver = Receiver()  # its port is chosen but nothing listens: connections are refused
    sink = {"type": "webhook", "name": "hook", "url": receiver.url,
            "secret_env": "OUTAGE_HOOK_KEY", "timeout_s": 1, "max_backoff_s": 1}
    config = load_config(write_config(sinks=[sink]), need_token=False)
    agent = start_agent(config)
    worker = DeliveryWorker(agent.store, build_sinks(config), agent.metrics,
                            poll_interval_s=0.05, base_backoff_s=0.05, seed=0)
    worker.start()
    signs = {
        "outbox_pending_over_0": lambda: (sample(agent.metrics, "metasentry_alert_outbox_pending",
                                                 sink="hook") or 0) > 0,
        "delivery_failures": lambda: total(agent.metrics, "metasentry_alert_delivery_failures",
                                           sink="hook") > 0,
        "oldest_pending_age_over_1s": lambda: (sample(
            agent.metrics, "metasentry_alert_outbox_oldest_pending_age_seconds",
            sink="hook") or 0) > 1,
    }
    try:
        with Watch(signs) as watch:
            started = time.monotonic()
            totals = agent.run_sources(stop_when_exhausted=True)
            ingest_s = time.monotonic() - started
            time.sleep(max(0.0, OUTAGE_S - ingest_s))
            backlog = sample(agent.metrics, "metasentry_alert_outbox_pending", sink="hook") or 0
            receiver.start()
            down_s = time.monotonic() - started
        assert wait_for(lambda: all(a.status == "delivered"
                                    for a in agent.store.list_alerts(sink="hook", limit=1000)),
                        60), "every queued alert delivered once the target is back"
        assert worker.stop(5)
        queued = [a.delivery_id for a in agent.store.list_alerts(sink="hook", limit=1000)]
    finally:
        receiver.stop()
    accepted = receiver.accepted_ids()
    position = agent.store.load_position(agent.sources[0].name) or {}
    agent.close()
    figures = Figures(
        "webhook target down", totals.received, totals.processed, sum(totals.rejected.values()),
        int(position.get("processed", 0)) + int(position.get("rejected", 0)), down_s,
        f"alerts queued {len(queued)}, delivered {len(set(accepted))}, delivered twice "
        f"{len(accepted) - len(set(accepted))}, backlog at recovery {backlog:.0f}, "
        f"ingestion took {ingest_s:.1f} s with the target down, seen {watch.seen}")
    print("\n" + figures.line())
    assert figures.lost == 0 and figures.duplicated == 0, figures.line()
    assert queued and accepted == queued, "each alert once, in order, none lost"
    assert ingest_s < down_s, "ingestion finished while the target was still down"
    assert backlog > 0 and not watch.missing(), f"the backlog was not visible: {watch.seen}"


# ----------------------------------------------------------- one replica's database hung


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
def test_one_replicas_hung_database_loses_and_doubles_nothing(
        write_config: Callable[..., Path], fresh_database: Callable[..., str],
        relay: Relay) -> None:
    """Replica A's connection to PostgreSQL stops forwarding; B goes on with the stream.

    A notices within seconds (its store's FAST timeouts), holds its one batch, reports itself
    not ready and buffered, and commits the batch once the connection forwards again; its
    entries are not taken over meanwhile, because ``claim_idle_s`` outlasts the hang. An
    entry taken from a replica that is alive and merely slow can be judged by both (see
    docs/SOURCES.md), so the claim timeout is set above the store's retry horizon.
    """
    entries = sample_entries(6000, bad_every=1000)
    database = fresh_database("metasentry_outage_replicas")
    with private_stream() as (client, key):
        client.xgroup_create(key, "agents", id="0", mkstream=True)
        agents: dict[str, Agent] = {}
        for name in ("replica-a", "replica-b"):
            url = relay.url(database) if name == "replica-a" else (
                PG_URL.rsplit("/", 1)[0] + "/" + database)
            config = load_config(write_config(f"{name}.yaml", **{
                "storage.url": url, "pipeline.batch_size": 200,
                "storage.retry_max_backoff_s": 0.5,
                "sources": [source_spec(key, consumer=name, claim_idle_s=OUTAGE_S + 30,
                                        batch_size=200)]}), need_token=False)
            store = Store(config.storage_url(), timeouts=FAST) if name == "replica-a" else None
            agents[name] = start_agent(config, store=store)
        a, b = agents["replica-a"], agents["replica-b"]
        monitor = HealthMonitor(a, interval_s=0.2)
        monitor.start()
        fed = threading.Event()
        written = [0]

        def produce() -> None:  # a live stream: 100 entries every 50 ms
            for start in range(0, len(entries), 100):
                pipe = client.pipeline(transaction=False)
                for entry in entries[start:start + 100]:
                    pipe.xadd(key, {"data": entry})
                pipe.execute()
                written[0] = min(start + 100, len(entries))
                time.sleep(0.05)
            fed.set()

        def done() -> bool:
            return fed.is_set() and drained(client, key)

        runners = [threading.Thread(target=run_until, args=(agent, done, 240), daemon=True)
                   for agent in (a, b)]
        for runner in runners:
            runner.start()
        threading.Thread(target=produce, daemon=True).start()
        # Hang A mid-stream: a third of the stream written, and A has judged some of it.
        assert wait_for(lambda: written[0] >= 2000 and a.totals.received > 0, 60), (
            "replica-a took its share")
        signs = {
            "a_buffered_1": lambda: sample(a.metrics, "metasentry_store_buffered_batches") == 1,
            "a_ready_0": lambda: sample(a.metrics, "metasentry_ready") == 0,
            "a_commit_retries": lambda: (sample(
                a.metrics, "metasentry_store_commit_retries_total") or 0) >= 1,
        }
        with Watch(signs) as watch:
            hung_at = time.monotonic()
            relay.blackhole()
            b_before = b.totals.received
            time.sleep(OUTAGE_S)
            b_during = b.totals.received - b_before
            held = getattr(a.sources[0], "unacknowledged", None)
            relay.heal()
            hung_s = time.monotonic() - hung_at
            wait_for(lambda: sample(a.metrics, "metasentry_store_buffered_batches") == 0, 30)
        for runner in runners:
            runner.join(240)
        monitor.stop()
        assert fed.is_set() and drained(client, key), "the stream was drained after the hang"
        with Store(PG_URL.rsplit("/", 1)[0] + "/" + database) as store:
            totals = committed_totals(store, ["events@replica-a", "events@replica-b"])
            rows, distinct = quarantine_rows(store)
        for agent in (a, b):
            agent.close()
    processed = sum(p for p, _ in totals.values())
    rejected = sum(r for _, r in totals.values())
    figures = Figures("one replica's PostgreSQL hung", len(entries), processed, rejected,
                      processed + rejected + rows - distinct, hung_s,
                      f"committed per replica {totals}, replica-a held {held} unacknowledged, "
                      f"replica-b read {b_during} while A hung, seen {watch.seen}")
    print("\n" + figures.line())
    assert figures.lost == 0 and figures.duplicated == 0, figures.line()
    assert rows == rejected == len(entries) - 6000
    assert b_during > 0, "the other replica went on while A was hung"
    assert not watch.missing(), f"the hang was not visible on replica-a: {watch.seen}"
