"""A database that cannot be reached surfaces as StoreUnavailable, so the agent can back off."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import NewIncident, Store, StoreUnavailable


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def dead_store() -> Iterator[Store]:
    store = Store(f"postgresql+psycopg://agent:s3cret@127.0.0.1:{closed_port()}/metasentry")
    yield store
    store.close()


def test_every_kind_of_call_raises_store_unavailable(dead_store: Store) -> None:
    batch = [NewIncident(kind="drift", severity="low", source="s", offset_key="1", detector="d")]
    calls = [
        dead_store.upgrade,
        dead_store.current_revision,
        lambda: dead_store.commit_batch(source="s", position={"o": 1}, incidents=batch),
        dead_store.list_incidents,
        lambda: dead_store.label_incident(1, "normal", actor="ana"),
        dead_store.active_model_version,
        lambda: dead_store.purge_older_than(30),
        # The alert delivery worker backs off on StoreUnavailable, and only on it.
        lambda: dead_store.alert_backlog("hook"),
        lambda: dead_store.claim_alerts("hook", holder="w", limit=10, lease_s=60),
        lambda: dead_store.complete_alerts([1]),
        lambda: dead_store.fail_alert(1, holder="w", error="x", retry_at=None),
        lambda: dead_store.release_alerts(holder="w"),
        dead_store.pending_alerts_by_sink,
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable) as caught:
            call()
        assert "s3cret" not in str(caught.value)
        assert "***" in str(caught.value)


def test_ping_reports_false_instead_of_raising(dead_store: Store) -> None:
    assert dead_store.ping() is False


def test_unopenable_sqlite_file_is_unavailable(tmp_path: Path) -> None:
    directory = tmp_path / "is_a_directory.db"
    directory.mkdir()
    with Store(f"sqlite:///{directory}") as store:
        with pytest.raises(StoreUnavailable):
            store.upgrade()
        assert store.ping() is False
