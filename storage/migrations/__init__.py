"""Alembic wiring built in code, so schema upgrades need no ``alembic.ini`` on disk.

The script location is this package's own directory, which makes ``upgrade`` work from a
source checkout, an installed wheel and any working directory alike.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(connection: Connection | None = None, *, url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations.

    Pass ``connection`` to migrate through an open connection (what the Store does), or
    ``url`` for Alembic's own engine (offline SQL generation, ad-hoc tooling).
    """
    config = Config()
    # configparser interpolation would read a "%" in the install path as a placeholder.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of MetaSentry."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}.")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    return MigrationContext.configure(connection).get_current_revision()
