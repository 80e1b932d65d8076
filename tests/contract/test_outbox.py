"""The alert outbox's contract, on SQLite and on PostgreSQL (``storage.outbox``).

An incident and its queued deliveries commit together or not at all; the routes decide which
sinks get which incidents; a sink's queue is leased to one worker at a time and handed out in
order; a dead worker's lease runs out; retention never drops an alert that is still pending.
"""

from __future__ import annotations

import doctest
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import storage.outbox
import storage.store
from storage import AlertRoute, NewDriftReport, NewIncident, Store, StoreRejected
from tests.pg import private_schema_url

EVERYTHING = AlertRoute("siem")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'outbox.db'}"
        return
    with private_schema_url("metasentry_outbox") as url:
        yield url


def open_store(url: str, *routes: AlertRoute) -> Store:
    store = Store(url, alert_routes=routes or (EVERYTHING,))
    store.upgrade()
    return store


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = open_store(store_url)
    yield store
    store.close()


def incident(offset: int, kind: str = "attack", severity: str = "high",
             **overrides: Any) -> NewIncident:
    return NewIncident(kind=kind, severity=severity, source="stream", offset_key=str(offset),
                       detector="classifier", explanation={"offset": offset}, **overrides)


def commit(store: Store, *incidents: NewIncident) -> tuple[int, ...]:
    return store.commit_batch(source="stream", position=None, incidents=incidents).created_ids


# ---------------------------------------------------------------------------- queueing


def test_the_docstring_examples_run() -> None:
    assert doctest.testmod(storage.outbox).failed == 0


def test_each_incident_is_queued_with_the_api_representation(store: Store) -> None:
    result = store.commit_batch(source="stream", position={"line": 2},
                                incidents=[incident(1), incident(2)])

    assert result.alerts_queued == 2
    queued = store.list_alerts(sink="siem")
    assert [a.incident_id for a in queued] == list(result.created_ids)
    for alert in queued:
        assert alert.payload == store.get_incident(alert.incident_id).to_dict()
        assert (alert.status, alert.attempts, alert.delivered_at) == ("pending", 0, None)
    assert len({a.delivery_id for a in queued}) == 2


def test_a_failure_in_the_same_transaction_leaves_neither_incident_nor_alert(
        store: Store) -> None:
    broken = NewDriftReport(source="stream", detector="d", window_end_key="w",
                            n_reference=10, n_window=None,  # type: ignore[arg-type]
                            statistic=1.0, p_value=0.5, rejected=False, features=[],
                            top_features=[])
    with pytest.raises(StoreRejected):
        store.commit_batch(source="stream", position={"line": 9}, incidents=[incident(1)],
                           drift_reports=[broken])

    assert store.list_incidents() == []
    assert store.list_alerts() == []
    assert store.load_position("stream") is None


def test_an_outbox_that_cannot_be_written_takes_the_incident_down_with_it(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any) -> int:
        raise RuntimeError("outbox insert failed")

    monkeypatch.setattr(storage.store, "queue_alerts", refuse)
    with pytest.raises(RuntimeError, match="outbox insert failed"):
        commit(store, incident(1))

    assert store.list_incidents() == []


def test_a_replayed_batch_queues_nothing_twice(store: Store) -> None:
    batch = [incident(1), incident(2)]
    commit(store, *batch)
    replay = store.commit_batch(source="stream", position=None, incidents=batch)

    assert (replay.incidents_duplicate, replay.alerts_queued) == (2, 0)
    assert len(store.list_alerts()) == 2


def test_routes_filter_by_severity_and_kind(store_url: str) -> None:
    pager = AlertRoute("pager", min_severity="high", kinds=frozenset({"attack", "novel"}))
    with open_store(store_url, pager, EVERYTHING) as store:
        ids = commit(store, incident(1, "attack", "high"), incident(2, "attack", "medium"),
                     incident(3, "drift", "critical"), incident(4, "novel", "critical"),
                     incident(5, "poisoning", "info"))

        assert [a.incident_id for a in store.list_alerts(sink="pager")] == [ids[0], ids[3]]
        assert [a.incident_id for a in store.list_alerts(sink="siem")] == list(ids)


def test_a_store_without_routes_queues_nothing(store_url: str) -> None:
    with Store(store_url) as store:
        store.upgrade()
        assert store.commit_batch(source="s", position=None,
                                  incidents=[incident(1)]).alerts_queued == 0
        assert store.list_alerts() == []


# ---------------------------------------------------------------------------- claims


def test_claims_hand_out_the_queue_in_order_to_one_holder_at_a_time(store: Store) -> None:
    ids = commit(store, *(incident(i) for i in range(5)))

    first = store.claim_alerts("siem", holder="a", limit=3, lease_s=30)
    assert [a.incident_id for a in first] == list(ids[:3])
    assert all(a.claimed_by == "a" for a in first)
    # Another worker gets nothing while a's lease is live, not even the rows a left.
    assert store.claim_alerts("siem", holder="b", limit=3, lease_s=30) == []
    # The holder itself gets its rows again (its lease renewed) plus what follows.
    again = store.claim_alerts("siem", holder="a", limit=10, lease_s=30)
    assert [a.incident_id for a in again] == list(ids)

    assert store.complete_alerts([a.id for a in again]) == 5
    assert store.alert_backlog("siem").pending == 0
    assert store.claim_alerts("siem", holder="b", limit=3, lease_s=30) == []


def test_a_dead_workers_lease_runs_out(store: Store) -> None:
    commit(store, incident(1), incident(2))
    store.claim_alerts("siem", holder="dead", limit=10, lease_s=1)

    later = datetime.now(UTC) + timedelta(seconds=5)
    taken = store.claim_alerts("siem", holder="alive", limit=10, lease_s=30, now=later)

    assert [a.claimed_by for a in taken] == ["alive", "alive"]


def test_a_released_lease_is_free_at_once(store: Store) -> None:
    commit(store, incident(1))
    store.claim_alerts("siem", holder="stopping", limit=10, lease_s=300)
    assert store.release_alerts(holder="stopping") == 1
    assert len(store.claim_alerts("siem", holder="next", limit=10, lease_s=30)) == 1


def test_the_queue_waits_for_its_oldest_alert(store: Store) -> None:
    commit(store, incident(1), incident(2))
    head, _ = store.claim_alerts("siem", holder="w", limit=10, lease_s=30)
    retry_at = datetime.now(UTC) + timedelta(seconds=60)
    assert store.fail_alert(head.id, holder="w", error="HTTP 503", retry_at=retry_at)

    # The second alert is due, but it must not overtake the first.
    assert store.claim_alerts("siem", holder="w", limit=10, lease_s=30) == []
    due = store.claim_alerts("siem", holder="w", limit=10, lease_s=30,
                             now=retry_at + timedelta(seconds=1))
    assert [a.id for a in due][0] == head.id
    assert (due[0].attempts, due[0].last_error) == (1, "HTTP 503")


def test_a_permanent_failure_is_kept_and_the_queue_moves_on(store: Store) -> None:
    commit(store, incident(1), incident(2))
    head, second = store.claim_alerts("siem", holder="w", limit=10, lease_s=30)

    assert store.fail_alert(head.id, holder="w", error="HTTP 400 Bad Request", retry_at=None)

    failed = store.list_alerts(status="failed")
    assert [(a.id, a.attempts, a.last_error) for a in failed] == [
        (head.id, 1, "HTTP 400 Bad Request")]
    assert [a.id for a in store.claim_alerts("siem", holder="w", limit=10, lease_s=30)] == [
        second.id]
    assert store.alert_backlog("siem").pending == 1


def test_only_the_lease_holder_records_a_failure(store: Store) -> None:
    commit(store, incident(1))
    (alert,) = store.claim_alerts("siem", holder="w", limit=10, lease_s=30)
    assert not store.fail_alert(alert.id, holder="someone-else", error="x", retry_at=None)
    assert store.list_alerts()[0].status == "pending"


def test_concurrent_claims_never_share_a_sink(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(4)]
    commit(stores[0], *(incident(i) for i in range(20)))
    results: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def claim(index: int, store: Store) -> None:
        try:
            barrier.wait()
            results[f"w{index}"] = [a.id for a in store.claim_alerts(
                "siem", holder=f"w{index}", limit=20, lease_s=30)]
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=claim, args=(i, s)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for store in stores:
        store.close()

    # SQLite may call a claim that waited too long "busy": that is a StoreUnavailable, retried.
    assert all(type(error).__name__ == "StoreUnavailable" for error in errors), errors
    winners = [name for name, ids in results.items() if ids]
    assert len(winners) == 1, results
    assert len(results[winners[0]]) == 20


def test_pending_rows_are_counted_per_sink(store_url: str) -> None:
    with open_store(store_url, EVERYTHING, AlertRoute("pager", min_severity="critical")) as store:
        commit(store, incident(1), incident(2, severity="critical"))
        store.complete_alerts([store.list_alerts(sink="siem")[0].id])
        assert store.pending_alerts_by_sink() == {"siem": 1, "pager": 1}


def test_backlog_counts_pending_rows_and_their_age(store: Store) -> None:
    assert store.alert_backlog("siem").pending == 0
    assert store.alert_backlog("siem").oldest_created_at is None
    commit(store, incident(1), incident(2))
    backlog = store.alert_backlog("siem")
    assert backlog.pending == 2
    assert backlog.oldest_created_at is not None
    assert abs((datetime.now(UTC) - backlog.oldest_created_at).total_seconds()) < 60


# ---------------------------------------------------------------------------- retention


def test_retention_keeps_pending_alerts_and_their_incidents(store: Store) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    delivered_id, pending_id = commit(store, incident(1, created_at=old),
                                      incident(2, created_at=old))
    delivered = next(a for a in store.list_alerts() if a.incident_id == delivered_id)
    store.complete_alerts([delivered.id])

    deleted = store.purge_older_than(30, now=datetime.now(UTC) + timedelta(days=31))

    assert deleted["incidents"] == 1 and deleted["alert_outbox"] == 1
    assert [i.id for i in store.list_incidents()] == [pending_id]
    assert [a.incident_id for a in store.list_alerts()] == [pending_id]
