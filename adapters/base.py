"""The contract every record source honours, and the values it hands to the pipeline.

A source delivers records *at least once*: the pipeline fetches a `Batch`, commits whatever the
batch produced (incidents, quarantine rows and ``batch.position``) in one transaction, and only
then calls `Source.ack`. After a crash the source is reopened with the last committed position and
re-delivers everything after it, so a record may be seen twice but never lost. Each record carries
an ``offset_key`` that is stable across restarts, which lets the store make incidents idempotent.

Data a source knows it can no longer read (a rotated file deleted before its end was reached,
a file truncated under the reader) is not silently passed over: the source logs a WARNING and
counts the bytes by one of `SKIP_REASONS` (``take_skipped`` on the file sources), and the
pipeline exports that count.

Bad input never raises: a line that cannot be decoded or parsed becomes a `RawRecord` whose
``fields`` is ``None`` and whose ``error`` is one of `ERROR_CODES`, so the pipeline can quarantine
it and count it. `SourceError` is reserved for problems no record can carry (a replay file that
does not exist, a CSV header that cannot be read); its message says what to do about it.

Two optional capabilities, looked up with ``getattr`` by the pipeline:

* a source several agent replicas read together (`SharedSource`, a Redis Streams consumer
  group) commits its position under a name of its own replica (``position_name``), so the
  replicas do not overwrite each other's positions, and is handed a way to read another
  replica's committed position (``bind_committed_positions``): a message a dead replica had
  committed but not yet acknowledged is then acknowledged, not judged a second time;
* a source that talks to a server says whether it can reach it (``reachable``), which the
  agent's readiness and ``metasentry_source_reachable`` report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, NamedTuple, Protocol, runtime_checkable

RecordFormat = Literal["jsonl", "csv"]
"""The line formats the sources understand."""

ERROR_DECODE: Final = "decode"
ERROR_NOT_JSON: Final = "not_json"
ERROR_NOT_OBJECT: Final = "not_object"
ERROR_CSV_COLUMNS: Final = "csv_columns"
ERROR_OVERSIZE: Final = "oversize"
ERROR_BLANK: Final = "blank"
"""A non-empty line of nothing but whitespace or control characters (``"\\x1c"``, U+2028...).

Only a line of zero bytes (or a lone ``"\\r"``) carries nothing and is skipped; anything else
is accounted for, so a writer emitting separators or padding shows up in the quarantine."""
ERROR_MISSING_FIELD: Final = "missing_field"
"""A message without the field its source reads records from (a Redis stream entry)."""
ERROR_MAX_DELIVERIES: Final = "max_deliveries"
"""A message delivered more often than its source allows: set aside unjudged (dead-lettered),
so a record that crashes the agent cannot crash it for ever."""

ERROR_CODES: Final[frozenset[str]] = frozenset(
    {
        ERROR_DECODE,
        ERROR_NOT_JSON,
        ERROR_NOT_OBJECT,
        ERROR_CSV_COLUMNS,
        ERROR_OVERSIZE,
        ERROR_BLANK,
        ERROR_MISSING_FIELD,
        ERROR_MAX_DELIVERIES,
    }
)
"""Every value `RawRecord.error` can take; bounded so it can label a metric."""

SKIP_ROTATED_MISSING: Final = "rotated_missing"
"""The file being read was rotated away and then deleted before its end was read."""
SKIP_TRUNCATED: Final = "truncated"
"""The file was truncated in place (``copytruncate``) before its end was read."""
SKIP_REPLACED: Final = "replaced"
"""Another file took the place (and the inode) of the one being read before its end was read."""
SKIP_UNREADABLE: Final = "unreadable"
"""A rotated file could not be read to its end (a corrupt or half-written ``.gz``)."""
SKIP_COMPRESSED: Final = "compressed"
"""A generation rotated after the one being read was compressed before it could be read."""

SKIP_REASONS: Final[frozenset[str]] = frozenset(
    {SKIP_ROTATED_MISSING, SKIP_TRUNCATED, SKIP_REPLACED, SKIP_UNREADABLE, SKIP_COMPRESSED}
)
"""Why a source skipped bytes it could not read; bounded so it can label a metric."""


class RawRecord(NamedTuple):
    """One line of input, parsed if it could be.

    A named tuple rather than a frozen dataclass: sources create one per line, and building a
    tuple costs less than half of a frozen dataclass's ``__init__`` on the hot path.

    Attributes
    ----------
    offset_key:
        Stable identity of the line within its source (for files
        ``"<generation>:<byte offset>"``, see `adapters.files`), identical when the same line is
        read again after a restart and different for a line at the same offset of another file
        generation; the store keys incidents and quarantine rows by it, so re-delivery does not
        double them and a new file does not collide with an old one.
    raw:
        The line as read, without its line ending (an excerpt for oversize lines; undecodable
        bytes are shown as ``\\xNN`` escapes).
    fields:
        The parsed record: a JSON object, or a CSV row as ``{column: text}``. ``None`` when the
        line could not be parsed.
    error:
        ``None`` for a good record, else one of `ERROR_CODES`.
    detail:
        One line saying what was wrong, for the analyst looking at the quarantine.
    """

    offset_key: str
    raw: str
    fields: dict[str, Any] | None
    error: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Batch:
    """What one `Source.fetch` returns.

    Attributes
    ----------
    source:
        Name of the source the records came from.
    records:
        The records, in source order; may be empty when nothing arrived before the timeout.
        A tuple, or for a clean CSV block `adapters.columnar.ColumnarRecords`, which keeps the
        cells as columns and makes a `RawRecord` only for the records asked for by index.
    position:
        JSON-serialisable point to resume from once this batch is committed (pass it to
        `Source.open` after a restart); ``None`` when the source cannot resume (stdin) or has
        not read anything yet.
    textual:
        ``True`` when field values are untyped text (CSV), so the encoder must parse numbers.
    exhausted:
        The source reached its end (replay mode, end of stdin) and nothing more will come.
        An exhausted batch never carries records, so a consumer may stop as soon as it sees one.
    """

    source: str
    records: Sequence[RawRecord]
    position: dict[str, Any] | None
    textual: bool
    exhausted: bool = False


class SourceError(RuntimeError):
    """A source cannot go on; the message names the problem and what to do about it."""


def check_fetch(name: str, max_records: int, timeout_s: float, *, readable: bool) -> None:
    """The arguments every `Source.fetch` refuses, in one place and with one wording.

    ``readable`` is whether the source is open and not closed yet.
    """
    if max_records < 1:
        raise ValueError(f"max_records must be at least 1, got {max_records}.")
    if timeout_s < 0:
        raise ValueError(f"timeout_s must be non-negative, got {timeout_s}.")
    if not readable:
        raise RuntimeError(f"source {name!r} is not open; call open() first.")


@runtime_checkable
class Source(Protocol):
    """A stream of records delivered at least once.

    Lifecycle: ``open(position)`` once, then ``fetch``/``ack`` in a loop, then ``close``.
    ``ack`` is called only after the store committed everything the batch produced; a source
    must never assume that a fetched batch has been processed before it is acknowledged.
    """

    name: str

    def open(self, position: Mapping[str, Any] | None) -> None:
        """Start reading, or resume just after the last committed ``position``."""
        ...

    def fetch(self, max_records: int, timeout_s: float) -> Batch:
        """Wait up to ``timeout_s`` for at least one record and return at most ``max_records``."""
        ...

    def ack(self, batch: Batch) -> None:
        """Note that ``batch`` and everything before it is safely committed."""
        ...

    def close(self) -> None:
        """Release files and handles; safe to call more than once."""
        ...

    @property
    def lag(self) -> int | None:
        """Bytes (or records) known to exist but not yet fetched; ``None`` if unknown."""
        ...


@dataclass(frozen=True)
class StreamStats:
    """One snapshot of a consumer group, and this replica's counts since it started.

    What a source read through a consumer group (`adapters.redis_stream`) reports as its
    ``stream_stats``; the agent exports it as the ``metasentry_stream_*`` metrics.

    Attributes
    ----------
    reachable:
        Whether the last call to the server succeeded.
    pending:
        Entries delivered to the group's consumers (any replica) and not acknowledged.
    group_lag:
        Entries added to the stream and never delivered to the group; ``None`` when unknown.
    unread_trimmed:
        Entries the stream received that the group will never read, because they were trimmed
        or deleted first, as far as the server's counters show it; ``None`` when unknown.
    oldest_pending_ms:
        Unix milliseconds in the id of the oldest pending entry; ``None`` when none is pending.
    read, acked, claimed, dead_lettered, trimmed, redelivered:
        Cumulative counts of this replica: entries delivered to it, acknowledged by it,
        taken over from idle consumers, moved to the dead-letter stream, found deleted while
        pending (their content was gone before they could be judged), and delivered again
        after their batch had been committed (acknowledged without being judged again).
    sessions_lost:
        Cumulative: reconnections on which the broker no longer had this agent's session (it
        expired or the broker lost it), so whatever it held unacknowledged is gone (MQTT).
    """

    reachable: bool = True
    pending: int | None = None
    group_lag: int | None = None
    unread_trimmed: int | None = None
    oldest_pending_ms: int | None = None
    read: int = 0
    acked: int = 0
    claimed: int = 0
    dead_lettered: int = 0
    trimmed: int = 0
    redelivered: int = 0
    sessions_lost: int = 0

    COUNTERS: ClassVar[tuple[str, ...]] = (
        "read", "acked", "claimed", "dead_lettered", "trimmed", "redelivered")
    """The cumulative fields, in the order the agent exports them."""


PositionLoader = Callable[[str], Mapping[str, Any] | None]
"""Reads the source position last committed under a position name (``None``: none yet)."""


@runtime_checkable
class SharedSource(Protocol):
    """A source read by several replicas at once, each committing its own position.

    ``position_name`` is the key the pipeline stores this replica's position under (the
    source's ``name`` stays the name of incidents, quarantine rows and metrics, so replicas
    de-duplicate each other's rows). ``bind_committed_positions`` is called once, before
    ``open``, with a function that reads the position another replica last committed.
    """

    name: str
    position_name: str

    def bind_committed_positions(self, load: PositionLoader) -> None:
        """Keep ``load`` to look up what other replicas committed."""
        ...


class CountedStream(Protocol):
    """A source read through a consumer group or a broker session: it reports `StreamStats`,
    which never waits for the server (a health thread reads them too).

    Not runtime-checkable: on Python 3.11 ``isinstance`` would read the property to check it.
    """

    name: str

    @property
    def stream_stats(self) -> StreamStats:
        """The backlog as last read, and this source's counts since it started."""
        ...


@runtime_checkable
class ServerSource(Protocol):
    """A source that reads from a server, and can therefore be cut off from it."""

    name: str

    @property
    def reachable(self) -> bool:
        """Whether the server answered the source's last call."""
        ...
