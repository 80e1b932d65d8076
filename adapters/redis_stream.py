"""Records from a Redis stream read through a consumer group: how several agents share a stream.

Every replica reads with ``XREADGROUP`` as its own consumer (by default ``<hostname>-<pid>``) of
one group, so Redis hands each entry to one replica. What makes it safe:

* **Acknowledged after the commit.** An entry is ``XACK``-ed only in `RedisStreamSource.ack`,
  which the pipeline calls after the store committed the batch holding it, as it does for
  every source. A crash in between leaves the entry pending, and it is delivered again.
* **Delivered again, judged once.** The position the pipeline commits with each batch lists
  the batch's entry ids, under a name of this replica (``position_name``,
  ``"<source>@<consumer>"``). An entry delivered again whose id is in the committed position
  of the replica that last held it was committed already: it is acknowledged without being
  judged a second time, so no count or grouped incident takes it twice. Anything else delivered
  again is judged again, and the store's keys (the entry id is the offset key) keep its rows
  single.
* **Recovery order.** On start, and after every reconnection (a reply lost in flight leaves
  entries pending that the replica never saw), this consumer's own pending entries are read
  first (id ``0``), then entries other consumers left idle for ``claim_idle_s``
  (``XAUTOCLAIM``: a dead replica's entries), then new ones (``>``).
* **Poison entries.** An entry delivered more than ``max_deliveries`` times (each restart of a
  replica that crashes on it, each claim, re-delivers it) is not judged again: it is
  quarantined with the reason ``max_deliveries`` and, once that is committed, copied to the
  dead-letter stream (``<stream>:dead``) with the reason and acknowledged, both in one Lua
  script that adds the copy only if this acknowledgement removed the entry from the group's
  pending list, so the copy is made once even when a replica dies between the two steps.
  An entry that cannot be parsed is an ordinary quarantined record, acknowledged at once.
* **Outages.** Connection errors are never raised to the pipeline: ``fetch`` returns empty
  batches while the server is unreachable, retrying with capped backoff (one WARNING when it
  goes, one INFO when it is back), ``ack`` keeps the ids of the committed batch until it can
  send them, and nothing new is read while any are kept, so at most one batch is held.
  ``reachable`` says whether the server answers.

Offsets are the entry ids; positions are ``{"stream", "group", "consumer", "ids", "dead"}``.
Window detectors keep a window per replica, and a restarted replica starts them empty: the
records of a window were spread over replicas and are acknowledged, so they cannot be re-read
to rebuild it (``position_at`` is not offered).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from adapters._outage import Outage
from adapters._redis_entries import Entry, EntryFormat, EntryParser
from adapters._redis_stats import GroupFigures, group_figures
from adapters.base import (
    ERROR_MAX_DELIVERIES,
    Batch,
    PositionLoader,
    RawRecord,
    SourceError,
    StreamStats,
    check_fetch,
)

logger = logging.getLogger(__name__)

StartId = Literal["$", "0"]

POSITION_NAME_CHARS = 255
"""Longest position name the store keeps (its ``source`` column)."""

_ACK_CHUNK = 1000
DEAD_LETTER_REASON = ERROR_MAX_DELIVERIES

# Adds the dead-letter copy only when this XACK removed the entry from the pending list: a
# replica that dies after the script ran leaves nothing for the next one to copy twice.
_DEAD_LETTER_SCRIPT = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
end
return false
"""


def default_consumer() -> str:
    """``<hostname>-<pid>``: distinct for every process, the same for none after a restart."""
    return f"{socket.gethostname()}-{os.getpid()}"


def position_name_for(source: str, consumer: str) -> str:
    """The name a replica's positions are stored under: ``"<source>@<consumer>"``.

    Names longer than the store keeps end in a digest of the whole name instead.

    >>> position_name_for("events", "host-a-17")
    'events@host-a-17'
    """
    name = f"{source}@{consumer}"
    if len(name) <= POSITION_NAME_CHARS:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name[:POSITION_NAME_CHARS - len(digest) - 1]}-{digest}"


@dataclass
class _Read:
    """Entries one call returned, with what is known about their past deliveries."""

    entries: list[Entry]
    deliveries: dict[str, int] = field(default_factory=dict)  # id -> times delivered
    owners: dict[str, str] = field(default_factory=dict)  # id -> consumer that held it (claims)
    history: bool = False  # this consumer's own pending entries


@dataclass
class _Handout:
    """A batch given to the pipeline and not yet acknowledged."""

    ids: tuple[str, ...]
    dead: dict[str, dict[bytes, bytes]]  # id -> the dead-letter copy to add at acknowledgement


class _GroupMissing(Exception):
    """The consumer group (or the stream) is gone: Redis lost it, or someone deleted it."""


class RedisStreamSource:
    """A Redis stream read as one consumer of a consumer group (``XREADGROUP``).

    Parameters
    ----------
    name:
        Name of the source, as in ``agent.yaml``; incidents and metrics carry it.
    url:
        ``redis://[user:password@]host:port/db``, ``rediss://`` or ``unix://``; a secret.
    stream, group:
        The stream key and the consumer group (created, with the stream, if missing).
    consumer:
        This replica's consumer name; default ``<hostname>-<pid>``. A name that survives a
        restart (a pod name) lets the restarted replica take its own pending entries back at
        once instead of after ``claim_idle_s``.
    field, format, columns, delimiter:
        Where the record is: in one field written as JSON or as a CSV line (with ``columns``),
        or (``field=None``) the entry's fields themselves.
    batch_size:
        Most entries read per call (also capped by what the pipeline asks for).
    block_ms:
        Longest a read waits for new entries (also capped by the caller's timeout).
    claim_idle_s:
        Entries pending this long with any consumer are taken over. Set it well above the
        longest time a replica may take to process and commit a batch: an entry taken from a
        live replica is judged twice (stored rows stay single; a grouped count may not).
    max_deliveries:
        An entry delivered more often than this is dead-lettered instead of judged.
    dead_letter_stream:
        Where dead-lettered entries go; default ``<stream>:dead``.
    start_id:
        Where a newly created group starts: ``"$"`` (new entries only) or ``"0"`` (the whole
        stream).
    max_record_bytes:
        Larger values become ``"oversize"`` error records.
    max_backoff_s:
        Longest wait between reconnection attempts.
    stats_interval_s:
        How often the group's backlog figures (`stream_stats`) are read from the server.
    connect_timeout_s:
        Connection timeout; a reply may take ``block_ms`` plus this.
    log_url:
        The URL as log lines show it (redacted); default: scheme, host, port and db only.

    Examples
    --------
    >>> import redis  # doctest: +SKIP
    >>> redis.Redis().xadd("doc:events", {"data": '{"port": 22}'})  # doctest: +SKIP
    >>> source = RedisStreamSource("events", "redis://127.0.0.1:6379/0", stream="doc:events",
    ...                            group="agents", field="data", start_id="0")  # doctest: +SKIP
    >>> source.open(None)  # doctest: +SKIP
    >>> batch = source.fetch(max_records=10, timeout_s=1.0)  # doctest: +SKIP
    >>> [r.fields for r in batch.records]  # doctest: +SKIP
    [{'port': 22}]
    >>> source.ack(batch)  # after the store committed the batch  # doctest: +SKIP
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        stream: str,
        group: str = "metasentry",
        consumer: str | None = None,
        field: str | None = None,
        format: EntryFormat = "json",
        columns: Sequence[str] | None = None,
        delimiter: str = ",",
        batch_size: int = 500,
        block_ms: int = 2000,
        claim_idle_s: float = 60.0,
        max_deliveries: int = 10,
        dead_letter_stream: str | None = None,
        start_id: StartId = "$",
        max_record_bytes: int = 1_048_576,
        max_backoff_s: float = 30.0,
        stats_interval_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        log_url: str | None = None,
    ) -> None:
        consumer = default_consumer() if consumer is None else consumer
        for label, value in (("name", name), ("stream", stream), ("group", group),
                             ("consumer", consumer)):
            if not value:
                raise ValueError(f"{label} must be a non-empty string.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        if block_ms < 1:
            raise ValueError(f"block_ms must be at least 1, got {block_ms}.")
        if not claim_idle_s > 0:
            raise ValueError(f"claim_idle_s must be positive, got {claim_idle_s}.")
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1, got {max_deliveries}.")
        if start_id not in ("$", "0"):
            raise ValueError(f"start_id must be '$' or '0', got {start_id!r}.")
        if stats_interval_s < 0:
            raise ValueError(f"stats_interval_s must be non-negative, got {stats_interval_s}.")
        dead_letter_stream = f"{stream}:dead" if dead_letter_stream is None else dead_letter_stream
        if dead_letter_stream == stream:
            raise ValueError("dead_letter_stream must differ from stream.")
        self.name = name
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_s = claim_idle_s
        self.max_deliveries = max_deliveries
        self.dead_letter_stream = dead_letter_stream
        self.start_id = start_id
        self.stats_interval_s = stats_interval_s
        self.position_name = position_name_for(name, consumer)
        self._parser = EntryParser(field=field, format=format, columns=columns,
                                   delimiter=delimiter, max_record_bytes=max_record_bytes)
        redis = _import_redis()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        try:
            self._client = redis.Redis.from_url(
                url, socket_connect_timeout=connect_timeout_s,
                socket_timeout=block_ms / 1000 + connect_timeout_s, socket_keepalive=True,
                retry=Retry(NoBackoff(), 0), protocol=2, decode_responses=False,
                client_name="metasentry:" + "_".join(consumer.split())[:100])
        except ValueError as exc:
            raise ValueError(f"url is not a Redis URL ({exc}).") from None
        self._transient: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
        self._response_error: type[Exception] = redis.exceptions.ResponseError
        self._dead_letter = self._client.register_script(_DEAD_LETTER_SCRIPT)
        self._shown_url = log_url if log_url is not None else _safe_url(self._client)
        self._outage = Outage(f"source {name!r}: Redis at {self._shown_url}",
                              max_s=max_backoff_s)
        self._claim_every = min(max(claim_idle_s / 4, 0.05), 5.0)
        self._loader: PositionLoader | None = None
        self._opened = False
        self._closed = False
        self._group_ready = False
        self._history_from: str | None = "0"  # cursor in this consumer's pending entries
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._next_stats = 0.0
        self._own_ids: frozenset[str] = frozenset()  # committed, from the position at open
        self._own_dead: frozenset[str] = frozenset()
        self._handouts: list[_Handout] = []
        self._handed_out: set[str] = set()
        self._to_ack: list[str] = []
        self._to_dead: dict[str, dict[bytes, bytes]] = {}
        self._figures: GroupFigures | None = None
        self._unread_trimmed: int | None = None
        self._counts = dict.fromkeys(StreamStats.COUNTERS, 0)

    # --- state -----------------------------------------------------------------------------

    @property
    def lag(self) -> int | None:
        """``None``: the stream's backlog is counted in entries, in `stream_stats`."""
        return None

    @property
    def reachable(self) -> bool:
        """Whether the server answered the last call (``True`` before the first)."""
        return not self._outage.down

    @property
    def unacknowledged(self) -> int:
        """Entries handed out or committed and not yet acknowledged: bounded by one batch in
        the pipeline's fetch-commit-ack loop, whatever the length of an outage."""
        return len(self._handed_out) + len(self._to_ack) + len(self._to_dead)

    @property
    def stream_stats(self) -> StreamStats:
        """The group's backlog as last read (every ``stats_interval_s``) and this replica's
        counts; never waits for the server, so a health thread may read it."""
        figures = self._figures
        return StreamStats(
            reachable=self.reachable,
            pending=None if figures is None else figures.pending,
            group_lag=None if figures is None else figures.group_lag,
            unread_trimmed=self._unread_trimmed,
            oldest_pending_ms=None if figures is None else figures.oldest_pending_ms,
            **self._counts)

    def bind_committed_positions(self, load: PositionLoader) -> None:
        """Keep ``load`` to read what another replica committed (see the module docstring)."""
        self._loader = load

    # --- the source contract ----------------------------------------------------------------

    def open(self, position: Mapping[str, Any] | None) -> None:
        """Start reading: this consumer's pending entries first, skipping those ``position``
        (the last one this replica committed) lists.

        Does not wait for the server: an unreachable one is retried by `fetch`.

        Raises
        ------
        SourceError
            When ``position`` is not a position of this source.
        """
        if self._opened:
            raise RuntimeError(f"source {self.name!r} is already open.")
        if position is not None:
            ids, dead = self._committed_in(position)
            if not ids and not dead and position.get("ids") is None:
                raise SourceError(
                    f"source {self.name!r}: stored position {dict(position)!r} is not a Redis "
                    "stream position (no 'ids'); delete it to start over.")
            self._own_ids, self._own_dead = ids, dead
        self._opened = True
        logger.info("source %r: reading stream %r as consumer %r of group %r (%s)", self.name,
                    self.stream, self.consumer, self.group, self._shown_url)

    def fetch(self, max_records: int, timeout_s: float) -> Batch:
        """Up to ``max_records`` records, waiting up to ``timeout_s`` for the first one.

        Returns an empty batch, never an error, while the server is unreachable.
        """
        check_fetch(self.name, max_records, timeout_s, readable=self._opened and not self._closed)
        deadline = time.monotonic() + timeout_s
        count = min(max_records, self.batch_size)
        while True:
            wait = self._outage.wait_s()
            if wait > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self._empty()
                time.sleep(min(wait, remaining))
                continue
            try:
                batch = self._fetch_once(count, deadline)
            except _GroupMissing as exc:
                self._group_vanished(exc)
                if time.monotonic() >= deadline:
                    return self._empty()
                continue
            except Exception as exc:
                if not self._is_server_trouble(exc):
                    raise
                self._lost(exc)
                continue
            self._outage.succeeded()
            if batch is not None:
                return batch
            if time.monotonic() >= deadline:
                return self._empty()

    def ack(self, batch: Batch) -> None:
        """Acknowledge ``batch`` and every batch handed out before it (they are committed).

        Never raises for an unreachable server: the ids are kept and sent by the next `fetch`,
        which reads nothing new until they are.
        """
        if batch.source != self.name:
            raise ValueError(f"batch from source {batch.source!r} acknowledged to {self.name!r}.")
        ids = tuple((batch.position or {}).get("ids") or ())
        index = next((i for i, h in enumerate(self._handouts) if h.ids == ids), None)
        if not ids or index is None:
            return
        done, self._handouts = self._handouts[:index + 1], self._handouts[index + 1:]
        for handout in done:
            self._to_ack.extend(handout.ids)
            self._to_dead.update(handout.dead)
            self._handed_out.difference_update(handout.ids)
        if self._outage.down:
            return
        self._against_server(self._flush)

    def close(self) -> None:
        """Send acknowledgements still held (if the server answers), then disconnect."""
        if self._closed:
            return
        self._closed = True
        if (self._to_ack or self._to_dead) and not self._outage.down:
            try:
                self._flush()
            except Exception as exc:  # noqa: BLE001 - best effort; replays are harmless
                logger.warning("source %r: %d acknowledgement(s) not sent at close (%s); the "
                               "entries will be delivered again and skipped", self.name,
                               len(self._to_ack), exc)
        self._client.close()

    def refresh_stats(self) -> None:
        """Read the group's backlog figures now; an unreachable server is noted, not raised."""
        if self._against_server(self._read_figures):
            self._outage.succeeded()

    def _against_server(self, call: Callable[[], object]) -> bool:
        """Run ``call``; a vanished group is recreated and an unreachable server noted as an
        outage (False) instead of raised; anything else is a bug and raises."""
        try:
            call()
        except _GroupMissing as exc:
            self._group_vanished(exc)
            return False
        except Exception as exc:
            if not self._is_server_trouble(exc):
                raise
            self._lost(exc)
            return False
        return True

    # --- reading ---------------------------------------------------------------------------

    def _fetch_once(self, count: int, deadline: float) -> Batch | None:
        """One round: acknowledgements owed, figures if due, then one read."""
        self._ensure_group()
        self._flush()
        if time.monotonic() >= self._next_stats:
            self._read_figures()
        read = self._read_history(count)
        if read is None:
            read = self._claim(count)
        if read is None:
            read = self._read_new(count, deadline)
        return self._batch(read)

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self._client.xgroup_create(self.stream, self.group, id=self.start_id, mkstream=True)
        except self._response_error as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
        else:
            logger.info("source %r: created consumer group %r of stream %r at %r", self.name,
                        self.group, self.stream, self.start_id)
        self._group_ready = True

    def _read_history(self, count: int) -> _Read | None:
        """This consumer's own pending entries, from the cursor; ``None`` once they are done."""
        if self._history_from is None:
            return None
        reply = self._call(self._client.xreadgroup, self.group, self.consumer,
                           {self.stream: self._history_from}, count=count)
        entries = _entries(reply)
        if not entries:
            self._history_from = None
            self._own_ids = self._own_dead = frozenset()
            return None
        self._history_from = entries[-1][0]
        gone = [entry_id for entry_id, fields in entries if not fields]
        if gone:  # delivered to us, then trimmed or deleted before we could judge it
            self._counts["trimmed"] += len(gone)
            self._warn_gone(len(gone), "pending with this consumer")
            self._to_ack.extend(gone)
        live = [(entry_id, fields) for entry_id, fields in entries if fields]
        return _Read(live, self._deliveries(live), history=True)

    def _claim(self, count: int) -> _Read | None:
        """Entries idle for ``claim_idle_s`` with any consumer (``XAUTOCLAIM``), when due."""
        now = time.monotonic()
        if now < self._next_claim:
            return None
        idle_ms = int(self.claim_idle_s * 1000)
        # Who held them: XAUTOCLAIM does not say, and a dead owner's committed position tells
        # which of them were committed already.
        probe = self._call(self._client.xpending_range, self.stream, self.group,
                           self._claim_cursor, "+", count, idle=idle_ms)
        if not probe:
            self._claim_cursor = "0-0"
            self._next_claim = now + self._claim_every
            return None
        owners = {_text(row["message_id"]): _text(row["consumer"]) for row in probe}
        reply = self._call(self._client.xautoclaim, self.stream, self.group, self.consumer,
                           idle_ms, start_id=self._claim_cursor, count=count)
        self._claim_cursor = _text(reply[0])
        if self._claim_cursor == "0-0":
            self._next_claim = now + self._claim_every
        gone = list(reply[2]) if len(reply) > 2 else []  # Redis >= 7 drops deleted ones
        claimed = [(_text(entry_id), fields) for entry_id, fields in reply[1]]
        gone += [entry_id for entry_id, fields in claimed if not fields]
        if gone:
            self._counts["trimmed"] += len(gone)
            self._warn_gone(len(gone), "pending with an idle consumer")
        live = [(entry_id, fields) for entry_id, fields in claimed if fields]
        if not live:
            return None
        self._counts["claimed"] += len(live)
        previous = sorted({owners.get(entry_id, "?") for entry_id, _ in live})
        logger.info("source %r: took over %d entries idle for %gs or more from %s", self.name,
                    len(live), self.claim_idle_s, ", ".join(previous))
        return _Read(live, self._deliveries(live), owners)

    def _read_new(self, count: int, deadline: float) -> _Read:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        block = min(self.block_ms, remaining_ms) if remaining_ms >= 1 else None
        reply = self._call(self._client.xreadgroup, self.group, self.consumer,
                           {self.stream: ">"}, count=count, block=block)
        return _Read(_entries(reply))

    def _deliveries(self, entries: list[Entry]) -> dict[str, int]:
        """How often each of ``entries`` (pending with this consumer) has been delivered."""
        if not entries:
            return {}
        rows = self._call(self._client.xpending_range, self.stream, self.group, entries[0][0],
                          entries[-1][0], len(entries) + len(self._handed_out),
                          consumername=self.consumer)
        return {_text(row["message_id"]): int(row["times_delivered"]) for row in rows}

    # --- from entries to a batch -------------------------------------------------------------

    def _batch(self, read: _Read) -> Batch | None:
        """The batch to judge: entries committed already are acknowledged instead, entries
        delivered too often are turned into dead-letter records."""
        committed, committed_dead = self._committed_for(read)
        fresh: list[Entry] = []
        dead: dict[str, dict[bytes, bytes]] = {}
        redelivered = 0
        for entry_id, fields in read.entries:
            if entry_id in self._handed_out:
                continue  # being judged right now (a caller that fetches before it acks)
            self._counts["read"] += 1
            deliveries = read.deliveries.get(entry_id, 1)
            if entry_id in committed_dead:
                self._to_dead[entry_id] = self._dead_copy(entry_id, fields, deliveries)
                redelivered += 1
            elif entry_id in committed:
                self._to_ack.append(entry_id)
                redelivered += 1
            else:
                if deliveries > self.max_deliveries:
                    dead[entry_id] = self._dead_copy(entry_id, fields, deliveries)
                fresh.append((entry_id, fields))
        if redelivered:
            self._counts["redelivered"] += redelivered
            logger.info("source %r: %d entries delivered again were committed already; "
                        "acknowledging them without judging them again", self.name, redelivered)
        if self._to_ack or self._to_dead:
            self._flush()
        if not fresh:
            return None
        records = self._parser.parse(fresh)
        if dead:
            records = [self._as_dead(record, dead[record.offset_key])
                       if record.offset_key in dead else record for record in records]
            logger.warning("source %r: %d entries delivered more than %d times (first %s) are "
                           "quarantined and moved to %r unjudged", self.name, len(dead),
                           self.max_deliveries, next(iter(dead)), self.dead_letter_stream)
        ids = tuple(record.offset_key for record in records)
        self._handouts.append(_Handout(ids, dead))
        self._handed_out.update(ids)
        position = {"stream": self.stream, "group": self.group, "consumer": self.consumer,
                    "ids": list(ids), "dead": sorted(dead)}
        return Batch(self.name, tuple(records), position, self._parser.textual)

    def _committed_for(self, read: _Read) -> tuple[frozenset[str], frozenset[str]]:
        """Ids among ``read`` committed already (plain, dead-lettered), by whoever held them."""
        if read.history:
            return self._own_ids, self._own_dead
        if not read.owners or self._loader is None:
            return frozenset(), frozenset()
        ids: set[str] = set()
        dead: set[str] = set()
        for owner in {read.owners[e] for e, _ in read.entries if e in read.owners}:
            if owner == self.consumer:
                continue
            try:
                position = self._loader(position_name_for(self.name, owner))
            except Exception as exc:  # noqa: BLE001 - unknown: judge again, the store de-duplicates
                logger.debug("source %r: position of consumer %r unreadable (%s)", self.name,
                             owner, exc)
                continue
            if position is not None:
                owner_ids, owner_dead = self._committed_in(position, owner)
                ids |= owner_ids
                dead |= owner_dead
        return frozenset(ids), frozenset(dead)

    def _committed_in(self, position: Mapping[str, Any], consumer: str | None = None
                      ) -> tuple[frozenset[str], frozenset[str]]:
        """The ids a position of ``consumer`` (default: this one) says were committed."""
        consumer = self.consumer if consumer is None else consumer
        if (position.get("stream"), position.get("group"), position.get("consumer")) != (
                self.stream, self.group, consumer):
            return frozenset(), frozenset()
        ids = position.get("ids")
        dead = position.get("dead") or []
        if not isinstance(ids, list) or not isinstance(dead, list):
            return frozenset(), frozenset()
        return (frozenset(i for i in ids if isinstance(i, str)),
                frozenset(i for i in dead if isinstance(i, str)))

    def _dead_copy(self, entry_id: str, fields: Mapping[bytes, bytes], deliveries: int
                   ) -> dict[bytes, bytes]:
        """The entry as the dead-letter stream keeps it: its fields, then why it is there."""
        detail = (f"delivered {deliveries} times, more than max_deliveries={self.max_deliveries}"
                  "; set aside without being judged")
        meta = {"metasentry.id": entry_id, "metasentry.stream": self.stream,
                "metasentry.group": self.group, "metasentry.consumer": self.consumer,
                "metasentry.reason": DEAD_LETTER_REASON, "metasentry.detail": detail,
                "metasentry.deliveries": str(deliveries)}
        return dict(fields) | {key.encode(): value.encode() for key, value in meta.items()}

    def _as_dead(self, record: RawRecord, copy: Mapping[bytes, bytes]) -> RawRecord:
        detail = copy[b"metasentry.detail"].decode() + f"; copied to {self.dead_letter_stream!r}"
        return record._replace(fields=None, error=ERROR_MAX_DELIVERIES, detail=detail)

    # --- acknowledging ----------------------------------------------------------------------

    def _flush(self) -> None:
        """Send the acknowledgements (and dead-letter copies) owed, in one round trip."""
        if not self._to_ack and not self._to_dead:
            return
        dead = dict(self._to_dead)
        plain = [entry_id for entry_id in dict.fromkeys(self._to_ack) if entry_id not in dead]
        pipe = self._client.pipeline(transaction=False)
        for entry_id, copy in dead.items():
            args = [self.group, entry_id, *(part for pair in copy.items() for part in pair)]
            self._dead_letter(keys=[self.stream, self.dead_letter_stream], args=args, client=pipe)
        for start in range(0, len(plain), _ACK_CHUNK):
            pipe.xack(self.stream, self.group, *plain[start:start + _ACK_CHUNK])
        results = pipe.execute(raise_on_error=False)
        self._to_ack, self._to_dead = [], {}
        retry: list[str] = []
        for entry_id, result in zip(dead, results[:len(dead)], strict=True):
            if isinstance(result, Exception):
                self._check_group(result)
                logger.error("source %r: entry %s could not be copied to %r (%s); it is "
                             "acknowledged, and stays in the quarantine", self.name, entry_id,
                             self.dead_letter_stream, result)
                retry.append(entry_id)
            elif result:
                self._counts["dead_lettered"] += 1
                self._counts["acked"] += 1
        for result in results[len(dead):]:
            if isinstance(result, Exception):
                self._check_group(result)
                raise result
            self._counts["acked"] += int(result)
        if retry:
            self._to_ack = retry
            self._flush()

    def _check_group(self, error: Exception) -> None:
        if _group_missing(error):
            raise _GroupMissing(str(error))

    # --- figures ---------------------------------------------------------------------------

    def _read_figures(self) -> None:
        self._next_stats = time.monotonic() + self.stats_interval_s
        pipe = self._client.pipeline(transaction=False)
        pipe.xinfo_groups(self.stream)
        pipe.xinfo_stream(self.stream)
        pipe.xpending(self.stream, self.group)
        groups, stream, pending = self._call(pipe.execute)
        wanted = self.group.encode()
        group = next((g for g in groups if g.get("name") in (wanted, self.group)), None)
        if group is None:
            raise _GroupMissing(f"no group {self.group!r} on stream {self.stream!r}")
        self._figures = group_figures(group, stream, pending)
        if self._figures.unread_trimmed is not None:
            if self._figures.unread_trimmed != (self._unread_trimmed or 0):
                logger.warning(
                    "source %r: the server counts %d entries of stream %r that group %r never "
                    "read (trimmed by MAXLEN/MINID or deleted before delivery)", self.name,
                    self._figures.unread_trimmed, self.stream, self.group)
            self._unread_trimmed = self._figures.unread_trimmed

    # --- trouble ---------------------------------------------------------------------------

    def _call(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a command, turning "the group is gone" into `_GroupMissing`."""
        try:
            return command(*args, **kwargs)
        except self._response_error as exc:
            self._check_group(exc)
            raise

    def _is_server_trouble(self, error: Exception) -> bool:
        """Connection trouble, or an answer no retry of ours can fix but an operator can
        (WRONGTYPE, NOPERM, READONLY, LOADING): retried with backoff, never raised."""
        return isinstance(error, (*self._transient, self._response_error))

    def _lost(self, error: Exception) -> None:
        """The server failed us: back off, and re-read our own pending entries afterwards
        (a read whose reply was lost left entries with us that we never saw)."""
        self._outage.failed(error)
        self._group_ready = False
        self._history_from = "0"
        self._claim_cursor = "0-0"

    def _group_vanished(self, error: Exception) -> None:
        logger.warning("source %r: consumer group %r of stream %r is gone (%s): Redis lost its "
                       "data or the key was deleted; recreating it at %r. Entries it held "
                       "pending and unacknowledged are no longer tracked", self.name, self.group,
                       self.stream, error, self.start_id)
        self._group_ready = False
        self._history_from = "0"
        self._claim_cursor = "0-0"
        self._to_ack, self._to_dead = [], {}

    def _warn_gone(self, count: int, where: str) -> None:
        logger.warning("source %r: %d entries %s were trimmed or deleted before they could be "
                       "judged; they are lost and counted", self.name, count, where)

    def _empty(self) -> Batch:
        return Batch(self.name, (), None, self._parser.textual)


def _import_redis() -> Any:
    try:
        import redis
    except ModuleNotFoundError as exc:
        raise SourceError("the redis_stream source needs the redis package: "
                          "pip install 'metasentry[redis]'") from exc
    return redis


def _safe_url(client: Any) -> str:
    """Scheme, host, port and db of the client's URL: nothing that can be a secret."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"


def _group_missing(error: BaseException) -> bool:
    text = str(error)
    return text.startswith("NOGROUP") or "no such key" in text.lower()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _entries(reply: Any) -> list[Entry]:
    """``(id, fields)`` pairs of an ``XREADGROUP`` reply (one stream); fields ``{}`` if deleted."""
    if not reply:
        return []
    messages = reply[0][1]  # RESP2 (the client is built with protocol=2)
    return [(_text(entry_id), fields or {}) for entry_id, fields in messages]
