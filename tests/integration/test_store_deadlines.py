"""Every PostgreSQL call ends in bounded time, however the server or the network fails.

Real faults only: the relay of pg_faults silences the network mid-statement, another session
holds a lock, the server terminates pooled connections.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest
from pg_faults import PG_URL, Relay
from sqlalchemy import make_url, text

from storage import NewIncident, Store, StoreTimeouts, StoreUnavailable
from storage.engine import create_store_engine

pytestmark = pytest.mark.postgres
FAST = StoreTimeouts(connect_s=2, statement_s=2, idle_in_transaction_s=5, operation_s=3,
                     ping_s=1)


def _incidents(n: int, *, start: int = 0) -> list[NewIncident]:
    return [NewIncident(kind="drift", severity="low", source="s", offset_key=str(i),
                        detector="d", record_excerpt="x" * 200) for i in range(start, start + n)]


def _direct(database: str) -> str:
    return make_url(PG_URL).set(database=database).render_as_string(hide_password=False)


def test_a_network_that_goes_silent_mid_statement_fails_the_call_in_time(
        fresh_database: Callable[..., str], relay: Relay) -> None:
    store = Store(relay.url(fresh_database("metasentry_deadline_test")), timeouts=FAST)
    store.upgrade()
    store.commit_batch(source="s", position={"n": 1}, incidents=_incidents(10))

    relay.blackhole(after_bytes=20_000)  # past the checkout, inside the INSERT
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="did not answer within 3s"):
        store.commit_batch(source="s", position={"n": 2}, incidents=_incidents(2000, start=10))
    assert time.monotonic() - started < FAST.operation_s + 1.5

    relay.heal()
    retried = store.commit_batch(source="s", position={"n": 2},
                                 incidents=_incidents(2000, start=10))
    assert retried.incidents_created == 2000, "the abandoned transaction committed nothing"
    assert store.count_incidents() == {"drift": 2010}
    assert store.load_position("s") == {"n": 2}
    store.close()


def test_a_silent_database_answers_ping_false_within_its_bounds(
        fresh_database: Callable[..., str], relay: Relay) -> None:
    store = Store(relay.url(fresh_database("metasentry_ping_test")), timeouts=FAST)
    store.upgrade()
    relay.blackhole()
    started = time.monotonic()
    assert store.ping() is False
    # A pooled connection's ping (1 s), then one fresh connection (2 s): no more.
    assert time.monotonic() - started < FAST.ping_s + FAST.connect_s + 1.5
    relay.heal()
    assert store.ping() is True
    store.close()


def test_a_statement_stuck_behind_a_lock_is_cancelled_by_the_server(
        fresh_database: Callable[..., str]) -> None:
    database = fresh_database("metasentry_lock_test")
    store = Store(_direct(database), timeouts=FAST)
    store.upgrade()
    admin = make_url(_direct(database)).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin) as holder:
        holder.execute("LOCK TABLE incidents IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="statement timeout"):
            store.commit_batch(source="s", position=None, incidents=_incidents(1))
        assert time.monotonic() - started < FAST.statement_s + 1.5
    assert store.commit_batch(source="s", position=None,
                              incidents=_incidents(1)).incidents_created == 1
    store.close()


def test_pooled_connections_the_server_ended_are_replaced_unseen(
        fresh_database: Callable[..., str]) -> None:
    database = fresh_database("metasentry_pool_test")
    store = Store(_direct(database), timeouts=FAST)
    store.upgrade()
    store.count_incidents()  # leaves a connection in the pool
    admin = make_url(PG_URL).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as conn:
        ended = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE datname = %s", (database,)).fetchone()
    assert ended is not None and ended[0] >= 1
    assert store.count_incidents() == {}, "no error reaches the caller"
    store.close()


def test_sessions_carry_the_server_side_timeouts_and_keep_the_url_options(
        fresh_database: Callable[..., str]) -> None:
    url = make_url(_direct(fresh_database("metasentry_settings_test"))).update_query_dict(
        {"options": "-csearch_path=elsewhere"})
    engine = create_store_engine(url, StoreTimeouts(statement_s=7, idle_in_transaction_s=90))
    try:
        with engine.connect() as connection:
            shown = {name: connection.execute(text(f"SHOW {name}")).scalar() for name in
                     ("statement_timeout", "idle_in_transaction_session_timeout", "search_path")}
    finally:
        engine.dispose()
    assert shown == {"statement_timeout": "7s", "idle_in_transaction_session_timeout": "90s",
                     "search_path": "elsewhere"}
