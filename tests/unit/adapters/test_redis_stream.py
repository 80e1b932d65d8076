"""The Redis Streams source against a real server: group reads, acknowledgement, recovery,
claims, dead letters, figures and outages (the pipeline's side is in tests/integration; entry
parsing, which needs no server, in test_redis_entries.py)."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from adapters import Batch, RedisStreamSource, SharedSource, Source
from tests.redis_server import REDIS_URL, private_stream

pytestmark = pytest.mark.redis


# --- against the server ---------------------------------------------------------------------


@pytest.fixture
def stream() -> Iterator[tuple[Any, str]]:
    with private_stream() as (client, key):
        yield client, key


def source(key: str, consumer: str = "c1", **kwargs: Any) -> RedisStreamSource:
    settings: dict[str, Any] = {"group": "g", "consumer": consumer, "field": "data",
                                "start_id": "0", "stats_interval_s": 0, "block_ms": 50}
    made = RedisStreamSource("s", REDIS_URL, stream=key, **(settings | kwargs))
    return made


def add(client: Any, key: str, count: int, start: int = 0) -> list[str]:
    return [client.xadd(key, {"data": json.dumps({"i": i})}).decode()
            for i in range(start, start + count)]


def numbers(batch: Batch) -> list[int | None]:
    return [None if r.fields is None else r.fields["i"] for r in batch.records]


def pending_ids(client: Any, key: str, consumer: str | None = None) -> list[str]:
    rows = client.xpending_range(key, "g", "-", "+", 10_000, consumername=consumer)
    return [row["message_id"].decode() for row in rows]


def test_is_a_shared_source_named_per_replica(stream: tuple[Any, str]) -> None:
    _, key = stream
    reader = source(key, consumer="pod-7")
    assert isinstance(reader, Source) and isinstance(reader, SharedSource)
    assert reader.position_name == "s@pod-7"
    assert RedisStreamSource("s", REDIS_URL, stream=key).consumer == (
        f"{socket.gethostname()}-{os.getpid()}")


@pytest.mark.parametrize(("start_id", "expected"), [("$", [3, 4]), ("0", [0, 1, 2, 3, 4])])
def test_a_new_group_starts_where_start_id_says(stream: tuple[Any, str], start_id: str,
                                                 expected: list[int]) -> None:
    client, key = stream
    add(client, key, 3)
    reader = source(key, start_id=start_id)
    reader.open(None)
    got = numbers(reader.fetch(10, 0.1))  # creates the group where start_id says
    add(client, key, 2, start=3)
    for _ in range(3):
        got += numbers(reader.fetch(10, 0.1))
    assert got == expected


def test_entries_leave_the_pending_list_only_when_acknowledged(stream: tuple[Any, str]) -> None:
    client, key = stream
    ids = add(client, key, 10)
    reader = source(key)
    reader.open(None)
    first = reader.fetch(4, 0.1)
    second = reader.fetch(4, 0.1)
    assert numbers(first) == [0, 1, 2, 3] and numbers(second) == [4, 5, 6, 7]
    assert pending_ids(client, key) == ids[:8], "nothing is acknowledged before the commit"
    assert reader.unacknowledged == 8
    reader.ack(second)  # the contract: a batch and everything before it is committed
    assert pending_ids(client, key) == []
    assert reader.unacknowledged == 0
    assert second.position == {"stream": key, "group": "g", "consumer": "c1",
                               "ids": ids[4:8], "dead": []}
    reader.close()


def test_a_restarted_consumer_reads_its_own_pending_entries_first(stream: tuple[Any, str]) -> None:
    client, key = stream
    add(client, key, 6)
    crashed = source(key)
    crashed.open(None)
    lost = crashed.fetch(3, 0.1)  # fetched, never committed
    crashed.close()
    restarted = source(key)
    restarted.open(None)
    again = restarted.fetch(10, 0.1)
    assert [r.offset_key for r in again.records] == [r.offset_key for r in lost.records]
    restarted.ack(again)
    assert numbers(restarted.fetch(10, 0.1)) == [3, 4, 5]


def test_entries_committed_before_a_crash_are_acknowledged_not_judged_again(
        stream: tuple[Any, str]) -> None:
    client, key = stream
    add(client, key, 6)
    crashed = source(key)
    crashed.open(None)
    committed = crashed.fetch(3, 0.1)  # the store committed it; the process died before XACK
    crashed.close()
    assert len(pending_ids(client, key)) == 3
    restarted = source(key)
    restarted.open(committed.position)
    batch = restarted.fetch(10, 0.1)
    assert numbers(batch) == [3, 4, 5]
    assert pending_ids(client, key) == [r.offset_key for r in batch.records]
    assert restarted.stream_stats.redelivered == 3


def test_a_second_consumer_takes_over_a_dead_consumers_entries_after_the_idle_time(
        stream: tuple[Any, str]) -> None:
    client, key = stream
    add(client, key, 8)
    dead = source(key, consumer="dead")
    dead.open(None)
    orphaned = dead.fetch(5, 0.1)
    dead.close()
    survivor = source(key, consumer="alive", claim_idle_s=0.6)
    survivor.open(None)
    fresh = survivor.fetch(10, 0.1)
    assert numbers(fresh) == [5, 6, 7], "not claimed before claim_idle_s"
    survivor.ack(fresh)
    time.sleep(0.7)
    claimed = survivor.fetch(10, 0.1)
    assert [r.offset_key for r in claimed.records] == [r.offset_key for r in orphaned.records]
    assert pending_ids(client, key, "alive") == [r.offset_key for r in claimed.records]
    survivor.ack(claimed)
    assert pending_ids(client, key) == []
    stats = survivor.stream_stats
    assert (stats.claimed, stats.read, stats.acked) == (5, 8, 8)


def test_claimed_entries_their_dead_owner_had_committed_are_not_judged_again(
        stream: tuple[Any, str]) -> None:
    client, key = stream
    add(client, key, 5)
    dead = source(key, consumer="dead")
    dead.open(None)
    committed = dead.fetch(3, 0.1)  # committed by the dead replica, never acknowledged
    uncommitted = dead.fetch(2, 0.1)  # read, then the replica died
    dead.close()
    positions = {"s@dead": committed.position}
    survivor = source(key, consumer="alive", claim_idle_s=0.2)
    survivor.bind_committed_positions(positions.get)
    survivor.open(None)
    time.sleep(0.3)
    batch = survivor.fetch(10, 0.5)
    assert numbers(batch) == [3, 4] == numbers(uncommitted)
    assert pending_ids(client, key) == [r.offset_key for r in batch.records]
    assert survivor.stream_stats.redelivered == 3


def test_an_entry_delivered_too_often_is_dead_lettered_once(stream: tuple[Any, str]) -> None:
    client, key = stream
    ids = add(client, key, 2)
    for _ in range(2):  # two replicas that died while judging the batch
        crashed = source(key, max_deliveries=2)
        crashed.open(None)
        assert numbers(crashed.fetch(10, 0.1)) == [0, 1]
        crashed.close()
    reader = source(key, max_deliveries=2)
    reader.open(None)
    batch = reader.fetch(10, 0.1)
    assert [(r.offset_key, r.error) for r in batch.records] == [
        (ids[0], "max_deliveries"), (ids[1], "max_deliveries")]
    assert batch.records[0].detail.startswith("delivered 3 times, more than max_deliveries=2")
    assert batch.position is not None and batch.position["dead"] == ids
    assert client.xlen(f"{key}:dead") == 0, "copied only once the quarantine is committed"
    reader.ack(batch)
    letters = client.xrange(f"{key}:dead")
    assert [fields[b"metasentry.id"].decode() for _, fields in letters] == ids
    assert letters[0][1][b"data"] == b'{"i": 0}'
    assert letters[0][1][b"metasentry.reason"] == b"max_deliveries"
    assert letters[0][1][b"metasentry.deliveries"] == b"3"
    assert pending_ids(client, key) == []
    assert reader.stream_stats.dead_lettered == 2


def test_a_dead_letter_committed_before_a_crash_is_copied_once(stream: tuple[Any, str]) -> None:
    client, key = stream
    add(client, key, 1)
    first = source(key, max_deliveries=1)
    first.open(None)
    first.fetch(10, 0.1)
    first.close()
    second = source(key, max_deliveries=1)
    second.open(None)
    dead = second.fetch(10, 0.1)  # quarantined and committed; the replica died before acking
    assert dead.records[0].error == "max_deliveries"
    second.close()
    for _ in range(2):  # restarts with the committed position copy it once, then never again
        restarted = source(key, max_deliveries=1)
        restarted.open(dead.position)
        assert restarted.fetch(10, 0.1).records == ()
        restarted.close()
    assert client.xlen(f"{key}:dead") == 1
    assert pending_ids(client, key) == []


def test_pending_entries_trimmed_before_they_were_judged_are_counted(
        stream: tuple[Any, str]) -> None:
    client, key = stream
    add(client, key, 4)
    crashed = source(key)
    crashed.open(None)
    crashed.fetch(3, 0.1)
    crashed.close()
    client.xtrim(key, maxlen=1, approximate=False)  # MAXLEN removes the three pending ones
    restarted = source(key)
    restarted.open(None)
    assert numbers(restarted.fetch(10, 0.1)) == [3]
    assert restarted.stream_stats.trimmed == 3
    assert len(pending_ids(client, key)) == 1  # the three gone ones were acknowledged


def test_group_figures_on_a_known_backlog(stream: tuple[Any, str]) -> None:
    client, key = stream
    ids = add(client, key, 100)
    reader = source(key)
    reader.open(None)
    reader.ack(reader.fetch(20, 0.1))
    reader.fetch(10, 0.1)
    reader.refresh_stats()
    stats = reader.stream_stats
    assert (stats.pending, stats.group_lag) == (10, 70)
    assert stats.oldest_pending_ms == int(ids[20].split("-")[0])
    assert (stats.read, stats.acked, stats.claimed, stats.dead_lettered) == (30, 20, 0, 0)
    assert stats.reachable


def test_entries_trimmed_before_the_group_read_them_are_reported(
        stream: tuple[Any, str]) -> None:
    client, key = stream
    add(client, key, 10)
    reader = source(key)
    reader.open(None)
    reader.ack(reader.fetch(3, 0.1))
    client.xtrim(key, maxlen=2, approximate=False)  # five entries never read are gone
    reader.ack(reader.fetch(10, 0.1))
    reader.refresh_stats()
    stats = reader.stream_stats
    assert stats.group_lag == 0 and stats.pending == 0
    server_lag = next(g for g in client.xinfo_groups(key) if g["name"] == b"g").get("lag")
    # Redis 7.0 keeps counting the trimmed gap in its lag; a server reporting nil cannot tell.
    assert stats.unread_trimmed == (5 if server_lag == 5 else None)


def test_a_deleted_stream_and_group_are_recreated(stream: tuple[Any, str],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    client, key = stream
    add(client, key, 2)
    reader = source(key)
    reader.open(None)
    reader.ack(reader.fetch(10, 0.1))
    client.delete(key)
    with caplog.at_level(logging.WARNING):
        assert reader.fetch(10, 0.2).records == ()
        add(client, key, 2, start=2)
        assert numbers(reader.fetch(10, 0.2)) in ([2, 3], [])
    assert "is gone" in caplog.text


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def kill_connections(client: Any, consumer: str) -> int:
    """Close the server side of every connection of ``consumer``'s source (and no other)."""
    killed = 0
    for connection in client.client_list():
        if connection.get("name") == f"metasentry:{consumer}":
            killed += client.client_kill_filter(_id=connection["id"])
    return killed


def test_an_unreachable_server_gives_empty_batches_and_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    port = _closed_port()
    url = f"redis://agent:s3cret-pw@127.0.0.1:{port}/0"
    reader = RedisStreamSource("s", url, stream="k", consumer="c1", connect_timeout_s=0.5)
    reader.open(None)
    with caplog.at_level(logging.DEBUG, logger="adapters"):
        started = time.monotonic()
        for _ in range(4):
            assert reader.fetch(10, 0.2).records == ()
        assert time.monotonic() - started < 3
    assert not reader.reachable
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning per outage, not one per attempt"
    assert "unreachable" in warnings[0].getMessage()
    assert "s3cret" not in caplog.text
    assert f"redis://127.0.0.1:{port}/0" in caplog.text
    reader.close()


def test_a_killed_connection_is_reopened_and_nothing_is_lost(stream: tuple[Any, str]) -> None:
    client, key = stream
    ids = add(client, key, 30)
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    reader = source(key, consumer=victim)
    reader.open(None)
    seen: list[str] = []
    for round_number in range(40):
        if round_number in (2, 5):
            assert kill_connections(client, victim) >= 1
        batch = reader.fetch(4, 0.2)
        seen += [r.offset_key for r in batch.records]
        if batch.records:
            reader.ack(batch)
        if len(seen) >= len(ids) and not pending_ids(client, key):
            break
    assert set(seen) == set(ids) and len(seen) == len(ids)
    assert pending_ids(client, key) == []
