"""Engine creation for the two supported backends, with the connection settings each needs.

SQLite is the single-process default: WAL lets API readers run while the pipeline writes,
``busy_timeout`` turns brief lock contention into a wait instead of an error, and SQLAlchemy
(not the ``sqlite3`` module) emits ``BEGIN`` so reads and writes share one real transaction.
PostgreSQL is for several replicas. Every wait on it is bounded (:class:`StoreTimeouts`): a
connect timeout for a dead host, TCP keepalives and ``tcp_user_timeout`` for a connection whose
peer vanished, a server-side ``statement_timeout`` for a slow server, and a client-side
deadline (``storage.deadline``) for a network that silently drops packets, which no libpq
setting can see. Pooled connections are pinged on checkout under that deadline too, so a
connection the server closed while the agent idled is replaced instead of failing a call.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, StaticPool

from storage.deadline import Watchdog, shut_down_socket
from storage.text import storable_json

logger = logging.getLogger(__name__)

SUPPORTED_BACKENDS: tuple[str, ...] = ("sqlite", "postgresql")
SQLITE_BUSY_TIMEOUT_MS = 5000

_SQLITE_PRAGMAS: tuple[str, ...] = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
)

# NaN and infinities become null (PostgreSQL's json type rejects them), numpy scalars and
# arrays serialise as numbers and lists, so detectors can hand over their own explanations.
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps_json(value: Any) -> str:
    """Serialise a JSON column value the same way on every backend.

    Strings and keys holding NUL or unpaired surrogates are made storable first (see
    ``storage.text``): orjson refuses surrogates, and PostgreSQL cannot turn a ``\\u0000``
    in a json value back into text. Clean values, the usual case, are serialised once.
    """
    try:
        serialised = orjson.dumps(value, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        serialised = orjson.dumps(storable_json(value), option=_ORJSON_OPTIONS)
    else:
        if b"\\u0000" in serialised:
            serialised = orjson.dumps(storable_json(value), option=_ORJSON_OPTIONS)
    return serialised.decode("utf-8")


@dataclass(frozen=True)
class StoreTimeouts:
    """How long the store waits for PostgreSQL before it calls the database unavailable.

    Every limit turns a hang into :class:`~storage.records.StoreUnavailable`, which the agent
    retries with backoff; none of them loses data. SQLite needs none of them: its only wait is
    the busy timeout on a lock, which is always bounded. A setting given in the URL's query
    (``?connect_timeout=3``, ``?options=-c statement_timeout=5000``) wins over these.

    Parameters
    ----------
    connect_s
        Establishing a connection, handshake and authentication included (libpq
        ``connect_timeout``; whole seconds, at least 2).
    statement_s
        One SQL statement, enforced by the server (``statement_timeout``): a slow or locked
        server cancels the statement and the connection stays usable.
    idle_in_transaction_s
        A transaction left open by a client that went away, enforced by the server
        (``idle_in_transaction_session_timeout``), so its row locks do not block a retry of the
        same batch from another connection.
    operation_s
        One whole store call, enforced by the client: past it the connection's socket is shut
        down. The only limit that holds when packets are silently dropped; keep it above
        ``statement_s`` so a merely slow server is cancelled cleanly first.
    ping_s
        Checking a pooled connection before reuse.
    pool_s
        Waiting for a free pooled connection.
    maintenance_s
        Replaces ``statement_s`` and ``operation_s`` for schema upgrades and retention purges,
        which may legitimately run long on a large database.
    keepalives_idle_s, keepalives_interval_s, keepalives_count
        TCP keepalive probes on idle connections (libpq ``keepalives_*``): a peer that vanished
        is noticed after idle + interval * count seconds.
    tcp_user_timeout_s
        How long sent data may stay unacknowledged before the kernel drops the connection
        (libpq ``tcp_user_timeout``, Linux).

    Examples
    --------
    >>> StoreTimeouts(statement_s=5, operation_s=10).postgres_options()
    '-c statement_timeout=5000 -c idle_in_transaction_session_timeout=60000'
    >>> StoreTimeouts(ping_s=0)
    Traceback (most recent call last):
    ...
    ValueError: ping_s must be a positive number of seconds, got 0.
    """

    connect_s: float = 10.0
    statement_s: float = 30.0
    idle_in_transaction_s: float = 60.0
    operation_s: float = 60.0
    ping_s: float = 5.0
    pool_s: float = 10.0
    maintenance_s: float = 900.0
    keepalives_idle_s: float = 30.0
    keepalives_interval_s: float = 10.0
    keepalives_count: int = 3
    tcp_user_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "keepalives_count":
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError(f"keepalives_count must be an integer >= 1, got {value!r}.")
            elif (not isinstance(value, int | float) or isinstance(value, bool)
                  or not math.isfinite(value) or value <= 0):
                raise ValueError(
                    f"{item.name} must be a positive number of seconds, got {value!r}."
                )

    def libpq_parameters(self) -> dict[str, Any]:
        """Connection parameters for libpq, in the units and types it expects."""
        return {
            # libpq reads connect_timeout as whole seconds and treats 1 as 2.
            "connect_timeout": max(2, math.ceil(self.connect_s)),
            "keepalives": 1,
            "keepalives_idle": max(1, math.ceil(self.keepalives_idle_s)),
            "keepalives_interval": max(1, math.ceil(self.keepalives_interval_s)),
            "keepalives_count": self.keepalives_count,
            "tcp_user_timeout": math.ceil(self.tcp_user_timeout_s * 1000),
        }

    def server_settings(self) -> dict[str, int]:
        """PostgreSQL session settings (milliseconds) that enforce the server-side limits."""
        return {
            "statement_timeout": _milliseconds(self.statement_s),
            "idle_in_transaction_session_timeout": _milliseconds(self.idle_in_transaction_s),
        }

    def postgres_options(self, given: str = "") -> str:
        """libpq's ``options`` parameter: ``given`` plus each setting it does not name."""
        ours = [f"-c {name}={value}" for name, value in self.server_settings().items()
                if name not in given]
        return " ".join([given, *ours]).strip()


def _milliseconds(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def parse_store_url(url: str | URL) -> URL:
    """Parse and check a database URL; a bare ``postgresql://`` means the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise ValueError(f"storage url is not a database URL: {error}") from None
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise ValueError(
            f"storage url backend {parsed.get_backend_name()!r} is not supported; "
            "use sqlite:///path/to/file.db or postgresql+psycopg://user@host/db."
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_sqlite_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_store_engine(
    url: str | URL, timeouts: StoreTimeouts | None = None, watchdog: Watchdog | None = None
) -> Engine:
    """Create the one engine a Store shares between its threads.

    ``watchdog`` bounds the ping of pooled PostgreSQL connections (``timeouts.ping_s``);
    without one, connections are pinged without a client-side deadline.
    """
    parsed = parse_store_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _create_sqlite_engine(parsed)
    return _create_postgres_engine(parsed, timeouts or StoreTimeouts(), watchdog)


def _create_sqlite_engine(url: URL) -> Engine:
    options: dict[str, Any] = {}
    if is_sqlite_memory(url):
        # One shared connection, or every pooled connection would see its own empty database.
        options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    else:
        Path(str(url.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, json_serializer=dumps_json, json_deserializer=orjson.loads, **options
    )
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # Taking BEGIN away from the sqlite3 module: it would otherwise start transactions only
    # before DML, leaving SELECTs (and DDL) outside the transaction they belong to.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _begin_sqlite_transaction(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")


def postgres_connect_args(url: URL, timeouts: StoreTimeouts) -> dict[str, Any]:
    """libpq parameters for the timeouts, leaving alone any the URL sets itself."""
    connect_args = {
        key: value for key, value in timeouts.libpq_parameters().items() if key not in url.query
    }
    given = url.query.get("options", "")
    connect_args["options"] = timeouts.postgres_options(
        given if isinstance(given, str) else " ".join(given)
    )
    return connect_args


def _create_postgres_engine(
    url: URL, timeouts: StoreTimeouts, watchdog: Watchdog | None
) -> Engine:
    engine = create_engine(
        url,
        # Replaced by the bounded ping below: SQLAlchemy's own would wait for ever on a
        # connection whose packets are being dropped.
        pool_pre_ping=False,
        pool_timeout=timeouts.pool_s,
        json_serializer=dumps_json,
        json_deserializer=orjson.loads,
        connect_args=postgres_connect_args(url, timeouts),
    )
    event.listen(engine, "connect", _mark_fresh)
    event.listen(engine, "checkout", _BoundedPing(engine, timeouts.ping_s, watchdog))
    return engine


def _mark_fresh(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["fresh"] = True


class _BoundedPing:
    """Ping a reused pooled connection on checkout, within ``seconds``; replace it if it fails.

    A connection made for this very checkout is not pinged: it has just answered. Raising
    ``DisconnectionError`` makes the pool discard the connection and connect afresh (within
    ``connect_timeout``), so at most one ping per checkout can wait.
    """

    def __init__(self, engine: Engine, seconds: float, watchdog: Watchdog | None) -> None:
        self._dialect = engine.dialect
        self._seconds = seconds
        self._watchdog = watchdog

    def __call__(
        self, dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        if record.info.pop("fresh", False):
            return
        deadline = (
            None if self._watchdog is None
            else self._watchdog.arm(self._seconds, shut_down_socket(dbapi_connection))
        )
        try:
            self._dialect.do_ping(dbapi_connection)
        except Exception as error:
            reason = "did not answer in time" if deadline and deadline.fired else str(error)
            logger.info("replacing a pooled database connection: %s", reason)
            raise DisconnectionError(reason) from error
        finally:
            if deadline is not None and self._watchdog is not None:
                self._watchdog.disarm(deadline)
