"""Fixtures for PostgreSQL fault injection: fresh databases and a relay (pg_faults.Relay)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from pg_faults import PG_URL, Relay


@pytest.fixture
def relay() -> Iterator[Relay]:
    """A relay to the test server, up; healed and taken down afterwards."""
    relay = Relay()
    relay.up()
    yield relay
    relay.heal()
    relay.down()


@pytest.fixture
def fresh_database() -> Iterator[Callable[..., str]]:
    """Make an empty database on the test server: ``fresh_database(name, encoding="UTF8")``.

    Each is dropped again after the test; the test is skipped without a server.
    """
    psycopg = pytest.importorskip("psycopg")
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        psycopg.connect(admin, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {admin} is not answering ({exc})")
    made: list[str] = []

    def make(name: str, encoding: str = "UTF8") -> str:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name} ENCODING '{encoding}' LC_COLLATE 'C' "
                         "LC_CTYPE 'C' TEMPLATE template0")
        made.append(name)
        return name

    yield make
    for name in made:
        with contextlib.suppress(Exception), psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
