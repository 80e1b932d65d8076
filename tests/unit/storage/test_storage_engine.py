"""Engine settings: SQLite pragmas on every connection, URL handling, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from storage import NewIncident, Store
from storage.engine import create_store_engine, dumps_json, parse_store_url


def test_every_sqlite_connection_gets_the_pragmas(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        # Two connections held at once: the pool must configure each new one, not only the first.
        with engine.connect() as first, engine.connect() as second:
            for connection in (first, second):
                pragmas = {
                    name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                    for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
                }
                assert pragmas == {
                    "journal_mode": "wal",
                    "synchronous": 1,
                    "busy_timeout": 5000,
                    "foreign_keys": 1,
                }
    finally:
        engine.dispose()


def test_sqlite_reads_and_writes_share_one_transaction(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 't.db'}")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT count(*) FROM t").scalar()
            assert connection.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
            connection.rollback()
    finally:
        engine.dispose()


def test_sqlite_parent_directory_is_created(tmp_path: Path) -> None:
    database = tmp_path / "deep" / "er" / "metasentry.db"
    store = Store(f"sqlite:///{database}")
    try:
        store.upgrade()
        assert database.exists()
    finally:
        store.close()


def test_in_memory_sqlite_works_across_calls() -> None:
    with Store("sqlite://") as store:
        store.upgrade()
        store.commit_batch(
            source="s",
            position={"o": 1},
            incidents=[
                NewIncident(kind="drift", severity="low", source="s", offset_key="1", detector="d")
            ],
        )
        assert store.count_incidents() == {"drift": 1}


def test_redacted_url_hides_the_password() -> None:
    store = Store("postgresql+psycopg://agent:s3cret@db.example:5432/metasentry")
    try:
        assert "s3cret" not in store.redacted_url
        assert store.redacted_url == "postgresql+psycopg://agent:***@db.example:5432/metasentry"
        assert store.dialect == "postgresql"
    finally:
        store.close()


def test_bare_postgresql_url_means_psycopg_3() -> None:
    assert parse_store_url("postgresql://u@h/db").drivername == "postgresql+psycopg"


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url"])
def test_unsupported_urls_are_rejected_with_advice(url: str) -> None:
    with pytest.raises(ValueError, match="storage url"):
        Store(url)


def test_json_serialiser_handles_numpy_and_non_finite_values() -> None:
    import numpy as np

    assert dumps_json({"a": np.int64(3), "b": np.array([1.5]), "c": float("inf"), 1: "k"}) == (
        '{"a":3,"b":[1.5],"c":null,"1":"k"}'
    )


def test_sqlite_url_with_relative_path_is_resolved_from_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with Store("sqlite:///var/metasentry.db") as store:
        store.upgrade()
    assert (tmp_path / "var" / "metasentry.db").exists()
    assert sa.make_url("sqlite:///var/metasentry.db").database == "var/metasentry.db"
