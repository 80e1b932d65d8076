"""The delivery worker (agent/delivery.py) against a real local HTTP server and real stores:
signed deliveries, a dead or hung receiver that never blocks ingestion, every alert delivered
exactly once by delivery id across restarts, refusals given up on, backoff, redaction."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from adapters.sinks import JsonlSink, WebhookSink
from agent.api import create_app
from agent.config import load_config
from agent.delivery import DeliveryWorker, SinkPlan, build_sinks, delivery_for
from agent.metrics import Metrics
from agent.service import Agent, wait_for
from storage import AlertRoute, NewIncident, Store
from tests.pg import private_schema_url
from tests.webhook_receiver import Receiver

KEY = "hook-signing-key-1e9c44"


def make_worker(store: Store, plans: list[SinkPlan], metrics: Metrics | None = None,
                **overrides: Any) -> DeliveryWorker:
    settings: dict[str, Any] = {"poll_interval_s": 0.05, "base_backoff_s": 0.05, "seed": 0}
    return DeliveryWorker(store, plans, metrics or Metrics(), **(settings | overrides))


def webhook(receiver: Receiver, name: str = "hook", timeout_s: float = 2.0,
            max_backoff_s: float = 0.2) -> SinkPlan:
    return SinkPlan(WebhookSink(name, receiver.url, secret=KEY.encode(), timeout_s=timeout_s),
                    max_backoff_s, f"webhook {name}")


def incident(offset: int, kind: str = "attack", severity: str = "high") -> NewIncident:
    return NewIncident(kind=kind, severity=severity, source="stream", offset_key=str(offset),
                       detector="classifier", explanation={"why": f"record {offset}"})


def commit(store: Store, *offsets: int) -> tuple[int, ...]:
    return store.commit_batch(source="stream", position=None,
                              incidents=[incident(i) for i in offsets]).created_ids


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    routes = (AlertRoute("hook"),)
    if request.param == "sqlite":
        with Store(f"sqlite:///{tmp_path / 'delivery.db'}", alert_routes=routes) as store:
            store.upgrade()
            yield store
        return
    with private_schema_url("metasentry_delivery") as url, \
            Store(url, alert_routes=routes) as store:
        store.upgrade()
        yield store


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


def all_delivered(store: Store, sink: str = "hook") -> Callable[[], bool]:
    return lambda: all(a.status == "delivered" for a in store.list_alerts(sink=sink))


# ---------------------------------------------------------------------------- delivery


def test_a_delivery_is_signed_and_carries_the_incident_as_the_api_shows_it(
        store: Store, receiver: Receiver) -> None:
    (incident_id,) = commit(store, 1)
    metrics = Metrics()
    worker = make_worker(store, [webhook(receiver)], metrics)
    worker.start()
    try:
        assert wait_for(all_delivered(store), 10)
    finally:
        assert worker.stop(5)

    (request,) = receiver.requests
    (alert,) = store.list_alerts()
    assert request.delivery_id == alert.delivery_id
    assert receiver.all_verified(KEY.encode())
    assert request.json() == store.get_incident(incident_id).to_dict()
    assert (alert.attempts, alert.last_error) == (1, None) and alert.delivered_at is not None
    assert sample(metrics, "metasentry_alerts_delivered_total", sink="hook") == 1
    assert sample(metrics, "metasentry_alert_outbox_pending", sink="hook") == 0
    assert sample(metrics, "metasentry_alert_outbox_oldest_pending_age_seconds", sink="hook") == 0


def test_every_alert_is_delivered_once_and_in_order_across_a_restart(
        store: Store, receiver: Receiver) -> None:
    commit(store, *range(0, 30))
    first = make_worker(store, [webhook(receiver)])
    first.start()
    assert wait_for(lambda: len(receiver.requests) >= 10, 10)
    assert first.stop(5)  # a clean stop gives the lease back at once

    commit(store, *range(30, 45))
    second = make_worker(store, [webhook(receiver)])
    second.start()
    try:
        assert wait_for(all_delivered(store), 20)
    finally:
        assert second.stop(5)

    queued = store.list_alerts(sink="hook", limit=100)
    assert receiver.accepted_ids() == [a.delivery_id for a in queued]  # once each, in order
    assert len(queued) == 45 and receiver.all_verified(KEY.encode())


def test_a_worker_that_died_after_sending_is_covered_by_the_delivery_id(
        store: Store, receiver: Receiver) -> None:
    commit(store, 1, 2)
    # A worker claims both alerts, sends them, and dies before recording it.
    claimed = store.claim_alerts("hook", holder="dead-worker", limit=10, lease_s=0.5)
    webhook(receiver).sink.send([delivery_for(a) for a in claimed])

    worker = make_worker(store, [webhook(receiver)])
    worker.start()
    try:
        assert wait_for(all_delivered(store), 10)  # once the dead worker's lease ran out
    finally:
        worker.stop(5)

    ids = receiver.accepted_ids()
    assert len(ids) == 4 and sorted(set(ids)) == sorted(a.delivery_id for a in claimed)
    # What a receiver keeps after dropping the ids it has seen: each alert once, in order.
    assert list(dict.fromkeys(ids)) == [a.delivery_id for a in claimed]


# ---------------------------------------------------------------------------- failures


def test_server_errors_are_retried_until_delivered_and_later_alerts_wait(
        store: Store) -> None:
    answers = iter([503, 503, 500])

    def flaky(_h: dict[str, str], _b: bytes) -> tuple[int, dict[str, str], bytes]:
        return next(answers, 200), {}, b""

    receiver = Receiver(respond=flaky).start()
    commit(store, 1, 2)
    metrics = Metrics()
    worker = make_worker(store, [webhook(receiver)], metrics)
    worker.start()
    try:
        assert wait_for(all_delivered(store), 10)
    finally:
        worker.stop(5)
        receiver.stop()

    first, second = store.list_alerts()
    assert [r.delivery_id for r in receiver.requests] == [first.delivery_id] * 4 + [
        second.delivery_id]
    assert (first.attempts, second.attempts) == (4, 1)
    assert first.last_error is not None and first.last_error.startswith("HTTP 500")
    assert sample(metrics, "metasentry_alert_delivery_failures_total", sink="hook",
                  reason="server_error") == 3
    assert sample(metrics, "metasentry_alert_permanent_failures_total", sink="hook") == 0


def test_a_refused_alert_is_given_up_after_a_few_attempts_and_the_queue_moves_on(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    commit(store, 1, 2, 3)
    refused_id = store.list_alerts()[0].delivery_id

    def refuse_one(headers: dict[str, str], _b: bytes) -> tuple[int, dict[str, str], bytes]:
        if headers["x-metasentry-delivery"] == refused_id:
            return 422, {}, b"schema mismatch: field severity"
        return 200, {}, b""

    receiver = Receiver(respond=refuse_one).start()
    metrics = Metrics()
    worker = make_worker(store, [webhook(receiver)], metrics)
    caplog.set_level(logging.WARNING, logger="agent.delivery")
    worker.start()
    try:
        assert wait_for(lambda: store.alert_backlog("hook").pending == 0, 10)
    finally:
        worker.stop(5)
        receiver.stop()

    failed, *delivered = store.list_alerts()
    assert (failed.status, failed.attempts) == ("failed", 3)
    assert failed.last_error == "HTTP 422 Unprocessable Entity: schema mismatch: field severity"
    assert [a.status for a in delivered] == ["delivered", "delivered"]
    assert receiver.accepted_ids() == [a.delivery_id for a in delivered]
    assert sample(metrics, "metasentry_alert_permanent_failures_total", sink="hook") == 1
    assert sample(metrics, "metasentry_alert_delivery_failures_total", sink="hook",
                  reason="refused") == 3
    warnings = [r for r in caplog.records if "giving up" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert refused_id in warnings[0].getMessage()


def test_stopping_while_a_receiver_hangs_is_bounded_and_loses_nothing(store: Store) -> None:
    with socket.create_server(("127.0.0.1", 0)) as blackhole:  # accepts, never answers
        port = blackhole.getsockname()[1]
        plan = SinkPlan(WebhookSink("hook", f"http://127.0.0.1:{port}/", secret=b"k",
                                    timeout_s=30), 1.0, "webhook")
        commit(store, 1)
        worker = make_worker(store, [plan])
        worker.start()
        time.sleep(0.5)  # the request is in flight now
        started = time.monotonic()
        assert not worker.stop(0.3)
        assert time.monotonic() - started < 1.0
    (alert,) = store.list_alerts()
    assert alert.status == "pending"  # leased; sent again once the lease runs out


def test_a_database_outage_is_waited_out_and_reported_once(
        receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    caplog.set_level(logging.WARNING, logger="agent.delivery")
    with Store(f"postgresql+psycopg://agent@127.0.0.1:{closed}/metasentry") as dead:
        worker = make_worker(dead, [webhook(receiver)])
        worker.start()
        time.sleep(0.5)  # several passes, each refused by the database
        assert worker.stop(5)
    outages = [r for r in caplog.records if "outbox is unavailable" in r.getMessage()]
    assert len(outages) == 1 and receiver.requests == []


def test_backoff_doubles_up_to_its_cap_with_jitter(store: Store) -> None:
    worker = make_worker(store, [], base_backoff_s=1.0)
    for attempts in range(1, 15):
        ceiling = min(60.0, 2.0 ** (attempts - 1))
        delays = [worker.backoff_s(attempts, 60.0) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempts, delays)
        if attempts > 2:
            assert len(set(delays)) > 1  # jittered
    assert worker.backoff_s(1, 60.0, retry_after_s=30) >= 30  # Retry-After honoured...
    assert worker.backoff_s(1, 60.0, retry_after_s=3600) <= 60  # ...up to the cap


# ---------------------------------------------------------------------------- files


def test_a_file_sink_writes_valid_lines_and_follows_rotation(store: Store,
                                                            tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    worker = make_worker(store, [SinkPlan(JsonlSink("hook", path), 1.0, "jsonl")])
    worker.start()
    try:
        commit(store, 1, 2)
        assert wait_for(all_delivered(store), 10)
        path.rename(tmp_path / "alerts.jsonl.1")
        commit(store, 3)
        assert wait_for(all_delivered(store), 10)
        worker.reopen()  # SIGHUP: harmless with nothing to reopen for
        commit(store, 4)
        assert wait_for(all_delivered(store), 10)
    finally:
        worker.stop(5)

    old = [orjson.loads(x) for x in (tmp_path / "alerts.jsonl.1").read_bytes().splitlines()]
    new = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    ids = [a.delivery_id for a in store.list_alerts()]
    assert [line["delivery_id"] for line in old + new] == ids
    assert len(old) == 2 and len(new) == 2
    assert new[0]["incident"] == store.get_incident(new[0]["incident"]["id"]).to_dict()


# ---------------------------------------------------------------------------- the agent


def test_a_hung_receiver_never_blocks_ingestion_and_gets_every_alert_after_a_restart(
        write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HOOK_KEY", KEY)
    blackhole = socket.create_server(("127.0.0.1", 0))  # connects, never answers
    port = blackhole.getsockname()[1]
    sink = {"type": "webhook", "name": "hook", "url": f"http://127.0.0.1:{port}/alerts",
            "secret_env": "TEST_HOOK_KEY", "timeout_s": 1, "max_backoff_s": 0.5}
    config = load_config(write_config(sinks=[sink]), need_token=False)

    # First life: the receiver hangs. Ingestion goes on; alerts wait in the outbox.
    agent = Agent(config)
    agent.prepare()
    agent.attach_configured_sources()
    worker = make_worker(agent.store, build_sinks(config), agent.metrics)
    worker.start()
    started = time.monotonic()
    totals = agent.run_sources(stop_when_exhausted=True, limit=5000)
    ingest_s = time.monotonic() - started
    assert totals.processed == 5000
    queued_first = agent.store.list_alerts(sink="hook")
    assert queued_first and all(a.status == "pending" for a in queued_first)
    assert wait_for(lambda: sample(agent.metrics, "metasentry_alert_delivery_failures_total",
                                   sink="hook", reason="timeout") >= 1, 10)
    assert wait_for(lambda: sample(agent.metrics, "metasentry_alert_outbox_pending",
                                   sink="hook") == len(queued_first), 10)
    assert sample(agent.metrics, "metasentry_alert_outbox_oldest_pending_age_seconds",
                  sink="hook") > 0
    assert worker.stop(5)
    agent.close()
    blackhole.close()

    # Second life, same database: the receiver is up on the same address.
    receiver = Receiver(port=port).start()
    try:
        agent = Agent(config)
        agent.prepare()
        agent.attach_configured_sources()
        worker = make_worker(agent.store, build_sinks(config), agent.metrics)
        worker.start()
        agent.run_sources(stop_when_exhausted=True)
        assert wait_for(all_delivered(agent.store), 30)
        assert worker.stop(5)
        queued = agent.store.list_alerts(sink="hook", limit=1000)
        # The body is what the REST API answers for the incident (as it was when queued).
        last = receiver.requests[-1].json()
        api = TestClient(create_app(agent)).get(f"/v1/incidents/{last['id']}")
        assert api.json() == last
        agent.close()
    finally:
        receiver.stop()

    assert len(queued) > len(queued_first)  # the second life raised alerts of its own
    assert receiver.accepted_ids() == [a.delivery_id for a in queued]  # each once, in order
    assert receiver.all_verified(KEY.encode())
    assert {r.json()["kind"] for r in receiver.requests} == {"drift"}
    assert ingest_s < 60


# ---------------------------------------------------------------------------- secrets


def test_credentials_in_a_webhook_url_and_the_key_never_reach_logs_or_the_outbox(
        write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    monkeypatch.setenv("TEST_HOOK_KEY", KEY)
    monkeypatch.setenv("HOOK_TOKEN", "tok-9d8e7f")
    down = Receiver()
    url = down.url.replace("http://", "http://svc:hunter2@") + "?token=${HOOK_TOKEN}"
    sink = {"type": "webhook", "name": "hook", "url": url, "secret_env": "TEST_HOOK_KEY",
            "timeout_s": 1, "max_backoff_s": 0.2}
    config = load_config(write_config(sinks=[sink]), need_token=False)
    with Store(f"sqlite:///{tmp_path / 'secrets.db'}", alert_routes=config.alert_routes()
               ) as store:
        store.upgrade()
        commit(store, 1)
        caplog.set_level(logging.DEBUG)
        worker = make_worker(store, build_sinks(config))
        worker.start()
        try:
            assert wait_for(lambda: store.list_alerts()[0].attempts >= 2, 10)
        finally:
            worker.stop(5)
        stored = " ".join(str(a.last_error) for a in store.list_alerts())

    logged = caplog.text
    assert "alert sink hook: webhook" in logged and "svc:***@" in logged
    for secret in ("hunter2", "tok-9d8e7f", KEY):
        assert secret not in logged and secret not in stored


def test_alerts_waiting_for_a_sink_no_longer_configured_are_reported_at_start(
        store: Store, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    commit(store, 1, 2)  # queued for "hook", which this worker does not have
    caplog.set_level(logging.WARNING, logger="agent.delivery")
    worker = make_worker(store, [webhook(receiver, "other")])
    worker.start()
    assert worker.stop(5)
    assert "2 alert(s) wait in the outbox for sink hook, which is not configured" in caplog.text
    assert [a.status for a in store.list_alerts()] == ["pending", "pending"]


def test_the_worker_threads_are_daemons_named_after_their_sinks(store: Store,
                                                               receiver: Receiver) -> None:
    worker = make_worker(store, [webhook(receiver, "a"), webhook(receiver, "b")])
    worker.start()
    try:
        names = {t.name: t.daemon for t in threading.enumerate() if t.name.startswith("sink-")}
        assert names == {"sink-a": True, "sink-b": True}
    finally:
        assert worker.stop(5)
    assert not any(t.name.startswith("sink-") for t in threading.enumerate())


def test_a_payload_is_the_json_the_outbox_holds(store: Store, receiver: Receiver) -> None:
    commit(store, 1)
    worker = make_worker(store, [webhook(receiver)])
    worker.start()
    try:
        assert wait_for(all_delivered(store), 10)
    finally:
        worker.stop(5)
    assert orjson.loads(receiver.requests[0].body) == store.list_alerts()[0].payload
