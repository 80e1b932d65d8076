"""Engine creation for the two supported backends, with the connection settings each needs.

SQLite is the single-process default: WAL lets API readers run while the pipeline writes,
``busy_timeout`` turns brief lock contention into a wait instead of an error, and SQLAlchemy
(not the ``sqlite3`` module) emits ``BEGIN`` so reads and writes share one real transaction.
PostgreSQL is for several replicas: ``pool_pre_ping`` drops connections the server closed
while the agent idled, and a connect timeout keeps a dead host from hanging a batch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

logger = logging.getLogger(__name__)

SUPPORTED_BACKENDS: tuple[str, ...] = ("sqlite", "postgresql")
SQLITE_BUSY_TIMEOUT_MS = 5000
POSTGRES_CONNECT_TIMEOUT_S = 10

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
    """Serialise a JSON column value the same way on every backend."""
    return orjson.dumps(value, option=_ORJSON_OPTIONS).decode("utf-8")


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


def create_store_engine(url: str | URL) -> Engine:
    """Create the one engine a Store shares between its threads."""
    parsed = parse_store_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _create_sqlite_engine(parsed)
    return _create_postgres_engine(parsed)


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


def _create_postgres_engine(url: URL) -> Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    return create_engine(
        url,
        pool_pre_ping=True,
        json_serializer=dumps_json,
        json_deserializer=orjson.loads,
        connect_args=connect_args,
    )
