"""A private PostgreSQL schema per test, on the server named by METASENTRY_TEST_PG_URL.

Shared by the test modules that run the API on PostgreSQL (``tests/contract/test_store.py``
has its own copy of the same idea, and could use this one).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from tests.conftest import PG_URL


@contextmanager
def private_schema_url(prefix: str = "metasentry_test") -> Iterator[str]:
    """A URL whose ``search_path`` is a fresh schema, dropped afterwards; skips without a server."""
    engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as error:
        engine.dispose()
        pytest.skip(f"PostgreSQL at {PG_URL} does not answer: {error}")
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
