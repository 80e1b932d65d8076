"""Alembic environment for MetaSentry's store.

``storage.migrations.alembic_config`` builds the Alembic config in code (no ``alembic.ini``), so
migrations run the same from a source checkout, an installed wheel and any working directory.
The Store passes its own open connection in ``config.attributes["connection"]``, which keeps
the engine's SQLite pragmas and PostgreSQL settings in force while migrating.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from storage.engine import create_store_engine
from storage.models import Base

target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit the SQL for a DBA to review instead of running it."""
    url = context.config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=bool(url) and str(url).startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic config has neither a connection nor sqlalchemy.url.")
    engine = create_store_engine(url)
    try:
        with engine.begin() as connection:
            _configure_and_run(connection)
    finally:
        engine.dispose()


def _running_under_alembic() -> bool:
    # Alembic's context proxy is only bound while a command runs; tools that import every
    # module (doctest collection, documentation builders) must find nothing to execute.
    return hasattr(context, "config")


if _running_under_alembic():
    if context.is_offline_mode():
        run_migrations_offline()
    else:
        run_migrations_online()
