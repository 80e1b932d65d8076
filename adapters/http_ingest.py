"""Records POSTed to the agent's API (``POST /v1/ingest``), held in a bounded queue until fetched.

The API handler parses a request body into `RawRecord`\\ s (`parse_ndjson`, `parse_json_array`)
and hands them to `HttpIngestSource.submit`, which queues them whole or not at all: a request
that does not fit raises `QueueFull` with a ``Retry-After`` estimate, so a client is slowed
down instead of the agent's memory growing. The pipeline fetches from the queue like from any
other source; a request is *committed* once every batch holding one of its records has been
acknowledged, which the pipeline does only after the store committed the batch. The handler
waits for that (a `Ticket`) before it answers 200, so "accepted" always means "in the database".

Nothing is resumable: the queue lives in memory, batches carry no position, and a crash loses
what was queued but not committed. Those requests were never answered 200, so their clients
retry; an ``Idempotency-Key`` makes the retry safe. The key names the request's records
(offset ``"<key>:<index>"``), recently committed keys are remembered (a retry is answered from
memory without queueing anything), and after a restart the store's (source, offset) keys stop
incidents and quarantine rows from doubling.

Thread model: the API's event loop calls `submit`, the pipeline thread calls ``fetch`` and
``ack``; one lock guards the queue. `Ticket` callbacks run on the pipeline thread and must
only hand the news over (``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from adapters._lines import EXCERPT_BYTES
from adapters.base import ERROR_NOT_OBJECT, Batch, RawRecord, check_fetch
from adapters.parsing import JsonlParser, oversize_record, parse_lines

logger = logging.getLogger(__name__)

DRAIN_WINDOW_S: Final = 30.0
"""How far back the drain rate behind ``Retry-After`` looks."""
MIN_RETRY_AFTER_S: Final = 1
MAX_RETRY_AFTER_S: Final = 60
UNKNOWN_RATE_RETRY_AFTER_S: Final = 5
"""``Retry-After`` when nothing has drained recently, so no rate can be measured."""


class IngestError(RuntimeError):
    """A request the ingest queue cannot take; subclasses say why."""


class QueueFull(IngestError):
    """The queue has no room for the request now; retry after ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooLarge(IngestError):
    """The request holds more than the whole queue can ever hold; split it."""


class KeyConflict(IngestError):
    """An idempotency key already names a request with a different body."""


class IngestClosed(IngestError):
    """The source is not open (the agent is starting or stopping)."""


# --- parsing a request body -------------------------------------------------------------------


def parse_ndjson(body: bytes, key: str, max_record_bytes: int) -> list[RawRecord]:
    """One record per line of ``body``; offsets ``"<key>:<line index>"``, counting from 0.

    Empty lines are skipped (they carry nothing), but they keep their index, so an index in
    the answer is always the 0-based line number a client can find in what it sent. Every
    other line becomes a record or an error record, exactly as a JSON-lines file would.

    >>> [(r.offset_key, r.error) for r in parse_ndjson(b'{"a": 1}\\n\\nnope\\n', "k", 100)]
    [('k:0', None), ('k:2', 'not_json')]
    """
    lines = body.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the newline that ends the last line opens no new one
    if lines and lines[0].startswith(b"\xef\xbb\xbf"):
        lines[0] = lines[0][3:]
    oversize = {i: len(line) for i, line in enumerate(lines) if len(line) > max_record_bytes}
    for index in oversize:
        lines[index] = lines[index][:EXCERPT_BYTES]
    keys = [f"{key}:{index}" for index in range(len(lines))]
    parser = JsonlParser(max_record_bytes)
    return parse_lines(keys, lines, oversize, max_record_bytes, parser.parse_texts)


class NotAnArray(ValueError):
    """A JSON body that is not a JSON array (or not JSON at all)."""


def parse_json_array(body: bytes, key: str, max_record_bytes: int) -> list[RawRecord]:
    """One record per element of a JSON array; offsets ``"<key>:<element index>"``.

    An element that is not an object, or whose JSON text is longer than ``max_record_bytes``,
    becomes an error record (``not_object``, ``oversize``) like a bad line would.

    Raises
    ------
    NotAnArray
        When ``body`` is not JSON, or is JSON but not an array.

    >>> [(r.offset_key, r.error) for r in parse_json_array(b'[{"a": 1}, 7]', "k", 100)]
    [('k:0', None), ('k:1', 'not_object')]
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise NotAnArray(f"the body is not JSON: {exc}") from None
    if type(value) is not list:
        raise NotAnArray(f"the body is a JSON {type(value).__name__}, not an array of records")
    records: list[RawRecord] = []
    for index, element in enumerate(value):
        offset = f"{key}:{index}"
        try:
            raw = orjson.dumps(element)
        except (orjson.JSONEncodeError, TypeError):
            # orjson reads 1,024 levels of nesting but writes only 255: an element between the
            # two cannot be kept as text, so it is refused rather than failing the request.
            records.append(RawRecord(offset, f"<JSON {type(element).__name__} nested too deeply "
                                     "to show>", None, ERROR_NOT_OBJECT,
                                     "element nested more than 255 levels deep"))
            continue
        if len(raw) > max_record_bytes:
            records.append(oversize_record(offset, raw[:EXCERPT_BYTES], len(raw),
                                           max_record_bytes))
        elif type(element) is dict:
            records.append(RawRecord(offset, raw.decode(), element))
        else:
            detail = f"JSON {type(element).__name__} where an object was expected"
            records.append(RawRecord(offset, raw.decode(), None, ERROR_NOT_OBJECT, detail))
    return records


# --- tickets --------------------------------------------------------------------------------


class Ticket:
    """One request's records on their way to the store.

    ``report`` is whatever the submitter wants to answer once the records are committed (the
    API keeps its per-record errors there), so a retry with the same key gets the same answer.
    """

    def __init__(self, key: str, digest: str, count: int, size: int, report: Any) -> None:
        self.key = key
        self.digest = digest
        self.count = count
        self.size = size
        self.report = report
        self._pending = count
        self._state = "queued" if count else "committed"
        self._callbacks: list[Callable[[Ticket], object]] = []
        self._lock = threading.Lock()

    @property
    def committed(self) -> bool:
        """Every record of the request is in the store."""
        return self._state == "committed"

    @property
    def abandoned(self) -> bool:
        """The source closed before the records were committed; they may never be."""
        return self._state == "abandoned"

    @property
    def done(self) -> bool:
        return self._state in ("committed", "abandoned")

    def on_done(self, callback: Callable[[Ticket], object]) -> None:
        """Call ``callback(ticket)`` once committed or abandoned (at once if already so)."""
        with self._lock:
            if not self.done:
                self._callbacks.append(callback)
                return
        _call(callback, self)

    def wait(self, timeout_s: float) -> bool:
        """Block until done, at most ``timeout_s``; True when committed (for callers off a loop)."""
        event = threading.Event()
        self.on_done(lambda _ticket: event.set())
        event.wait(timeout_s)
        return self.committed

    def _settle(self, records: int) -> None:
        with self._lock:
            self._pending -= records
            if self._pending > 0 or self.done:
                return
            self._state = "committed"
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call(callback, self)

    def _abandon(self) -> None:
        with self._lock:
            if self.done:
                return
            self._state = "abandoned"
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call(callback, self)


def _call(callback: Callable[[Ticket], object], ticket: Ticket) -> None:
    # A waiter that went away (its event loop closed) must not break the pipeline's ack.
    try:
        callback(ticket)
    except Exception:
        logger.exception("ingest: a waiter's callback failed for request %s", ticket.key)


# --- the source -----------------------------------------------------------------------------


@dataclass
class _Chunk:
    """The not yet fetched part of one request's records."""

    ticket: Ticket
    records: Sequence[RawRecord]
    start: int = 0


@dataclass
class _InFlight:
    """A fetched batch, and how many of its records belong to which request."""

    batch: Batch
    counts: list[tuple[Ticket, int]] = field(default_factory=list)


class HttpIngestSource:
    """A bounded in-memory queue of records submitted over HTTP.

    Parameters
    ----------
    name:
        Name of the source, as in ``agent.yaml``.
    max_queue_records, max_queue_bytes:
        Bounds on what is queued and not yet fetched (bytes count the records' text). A request
        that would pass either is refused with `QueueFull`; one larger than either bound on its
        own, with `TooLarge`.
    remember_keys:
        How many committed idempotency keys are kept to answer retries from memory.
    clock:
        Monotonic seconds; tests pass their own.

    Examples
    --------
    >>> source = HttpIngestSource("http", max_queue_records=10)
    >>> source.open(None)
    >>> ticket = source.submit("req-1", "sha", parse_ndjson(b'{"a": 1}\\n{"a": 2}\\n', "req-1", 99))
    >>> batch = source.fetch(max_records=10, timeout_s=0)
    >>> [r.offset_key for r in batch.records], ticket.committed
    (['req-1:0', 'req-1:1'], False)
    >>> source.ack(batch)
    >>> ticket.committed
    True
    """

    def __init__(self, name: str = "http", *, max_queue_records: int = 100_000,
                 max_queue_bytes: int = 64 * 1024 * 1024, remember_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not name:
            raise ValueError("name must be a non-empty string.")
        if max_queue_records < 1:
            raise ValueError(f"max_queue_records must be at least 1, got {max_queue_records}.")
        if max_queue_bytes < 1:
            raise ValueError(f"max_queue_bytes must be at least 1, got {max_queue_bytes}.")
        if remember_keys < 0:
            raise ValueError(f"remember_keys must be non-negative, got {remember_keys}.")
        self.name = name
        self.max_queue_records = max_queue_records
        self.max_queue_bytes = max_queue_bytes
        self.remember_keys = remember_keys
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[_Chunk] = deque()
        self._queued_records = 0
        self._queued_bytes = 0
        self._in_flight: deque[_InFlight] = deque()
        self._live: dict[str, Ticket] = {}  # keys queued or in flight
        self._recent: OrderedDict[str, Ticket] = OrderedDict()  # committed keys, oldest first
        self._drained: deque[tuple[float, int]] = deque()  # (when, records committed)
        self._opened = False
        self._closed = False

    # --- what the API sees -------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """Open and not closed: `submit` can queue."""
        return self._opened and not self._closed

    @property
    def lag(self) -> int:
        """Records queued and not yet fetched."""
        return self._queued_records

    @property
    def queued_bytes(self) -> int:
        """Text bytes of the records queued and not yet fetched."""
        return self._queued_bytes

    def ticket(self, key: str) -> Ticket | None:
        """The request already known under ``key`` (queued, in flight or recently committed)."""
        with self._cond:
            return self._live.get(key) or self._recent.get(key)

    def submit(self, key: str, digest: str, records: Sequence[RawRecord],
               report: Any = None) -> Ticket:
        """Queue a request's records, all of them or none; the `Ticket` says when committed.

        A key already known returns its ticket when ``digest`` (of the body) matches, so a
        retry waits for (or is answered by) the first attempt instead of queueing twice.

        Raises
        ------
        KeyConflict
            The key names a request with another digest.
        TooLarge
            The request holds more records or bytes than the queue could ever take.
        QueueFull
            There is no room now; ``retry_after_s`` estimates when there will be.
        IngestClosed
            The source is not open.
        """
        size = sum(len(record.raw) for record in records)
        with self._cond:
            known = self._live.get(key) or self._recent.get(key)
            if known is not None:
                if known.digest != digest:
                    raise KeyConflict(f"Idempotency-Key {key!r} was used for a different body; "
                                      "use a new key for new records")
                return known
            if not self.accepting:
                raise IngestClosed(f"source {self.name!r} is not accepting records")
            if len(records) > self.max_queue_records or size > self.max_queue_bytes:
                raise TooLarge(
                    f"{len(records)} records of {size} bytes exceed what the ingest queue holds "
                    f"({self.max_queue_records} records, {self.max_queue_bytes} bytes); "
                    "send them in smaller requests")
            if (self._queued_records + len(records) > self.max_queue_records
                    or self._queued_bytes + size > self.max_queue_bytes):
                raise QueueFull(f"the ingest queue is full ({self._queued_records} records "
                                "waiting); retry later", self._retry_after_s())
            ticket = Ticket(key, digest, len(records), size, report)
            if not records:
                self._remember(ticket)
                return ticket
            self._queue.append(_Chunk(ticket, records))
            self._queued_records += len(records)
            self._queued_bytes += size
            self._live[key] = ticket
            self._cond.notify_all()
        return ticket

    def retry_after_s(self) -> int:
        """Seconds until the records queued now have likely drained (for 429 and 503)."""
        with self._cond:
            return self._retry_after_s()

    # --- the Source contract -----------------------------------------------------------------

    def open(self, position: Mapping[str, Any] | None) -> None:
        """Start accepting; a stored position means nothing, since the queue was in memory."""
        with self._cond:
            self._opened = True

    def fetch(self, max_records: int, timeout_s: float) -> Batch:
        """Up to ``max_records`` queued records, waiting up to ``timeout_s`` for the first."""
        with self._cond:
            check_fetch(self.name, max_records, timeout_s,
                        readable=self._opened and not self._closed)
            self._cond.wait_for(lambda: bool(self._queue) or self._closed, timeout_s)
            taken: list[RawRecord] = []
            counts: list[tuple[Ticket, int]] = []
            while self._queue and len(taken) < max_records:
                chunk = self._queue[0]
                stop = min(len(chunk.records), chunk.start + max_records - len(taken))
                part = chunk.records[chunk.start:stop]
                taken.extend(part)
                counts.append((chunk.ticket, len(part)))
                self._queued_bytes -= sum(len(record.raw) for record in part)
                chunk.start = stop
                if stop == len(chunk.records):
                    self._queue.popleft()
            self._queued_records -= len(taken)
            batch = Batch(self.name, tuple(taken), None, False)
            if taken:
                self._in_flight.append(_InFlight(batch, counts))
        return batch

    def ack(self, batch: Batch) -> None:
        """Settle the requests with records in ``batch`` or any batch fetched before it."""
        if batch.source != self.name:
            raise ValueError(f"batch from source {batch.source!r} acknowledged to {self.name!r}.")
        if not batch.records:
            return
        settled: list[tuple[Ticket, int]] = []
        with self._cond:
            if not any(entry.batch is batch for entry in self._in_flight):
                logger.warning("source %s: acknowledged a batch it has no record of", self.name)
                return
            while self._in_flight:
                entry = self._in_flight.popleft()
                settled.extend(entry.counts)
                self._note_drained(len(entry.batch.records))
                if entry.batch is batch:
                    break
        for ticket, records in settled:
            ticket._settle(records)
            if ticket.committed:
                with self._cond:
                    self._live.pop(ticket.key, None)
                    self._remember(ticket)

    def close(self) -> None:
        """Stop accepting; requests not yet committed are abandoned (their waiters get 503)."""
        with self._cond:
            self._closed = True
            waiting = list(self._live.values())
            self._live.clear()
            self._queue.clear()
            self._in_flight.clear()
            self._queued_records = self._queued_bytes = 0
            self._cond.notify_all()
        for ticket in waiting:
            ticket._abandon()

    # --- internals (the lock is held) --------------------------------------------------------

    def _remember(self, ticket: Ticket) -> None:
        if self.remember_keys == 0:
            return
        self._recent[ticket.key] = ticket
        self._recent.move_to_end(ticket.key)
        while len(self._recent) > self.remember_keys:
            self._recent.popitem(last=False)

    def _note_drained(self, records: int) -> None:
        now = self._clock()
        self._drained.append((now, records))
        while self._drained and now - self._drained[0][0] > DRAIN_WINDOW_S:
            self._drained.popleft()

    def _retry_after_s(self) -> int:
        now = self._clock()
        while self._drained and now - self._drained[0][0] > DRAIN_WINDOW_S:
            self._drained.popleft()
        if not self._drained:
            return UNKNOWN_RATE_RETRY_AFTER_S
        drained = sum(records for _, records in self._drained)
        span = max(now - self._drained[0][0], 1.0)
        seconds = self._queued_records / (drained / span)
        return int(min(max(math.ceil(seconds), MIN_RETRY_AFTER_S), MAX_RETRY_AFTER_S))
