"""The database itself refuses to change or remove audit rows: triggers on ``audit_log``.

Until now the log was append-only because no code path updated or deleted a row; anyone with
SQL access still could, silently. These triggers make every UPDATE or DELETE (and, on
PostgreSQL, TRUNCATE) of ``audit_log`` fail with an integrity error naming the table, whoever
issues it, so removing evidence takes a deliberate schema change that itself shows (dropping
or disabling the trigger; docs/RELIABILITY.md says how to prune on purpose).

- PostgreSQL: one plpgsql function raising SQLSTATE 23001 (restrict_violation), fired BEFORE
  UPDATE OR DELETE OR TRUNCATE, once per statement, so even a statement that matches no row
  is refused.
- SQLite: BEFORE UPDATE and BEFORE DELETE triggers with ``RAISE(ABORT, ...)`` (SQLite has no
  TRUNCATE; its truncate optimisation of a bare ``DELETE`` is off while a trigger exists).

Dropping the table (a downgrade past 0006) is not a DELETE and still works. A later migration
that rebuilds ``audit_log`` on SQLite (``batch_alter_table``) drops these triggers with the old
table and must create them again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 03:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MESSAGE = "audit_log is append-only"

_PG_UPGRADE = (
    f"""
    CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{_MESSAGE}: % refused', TG_OP
            USING ERRCODE = 'restrict_violation',
                  HINT = 'audit rows are never changed or removed; see docs/RELIABILITY.md';
    END
    $$
    """,
    """
    CREATE TRIGGER audit_log_append_only
        BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change()
    """,
)
_PG_DOWNGRADE = (
    "DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log",
    "DROP FUNCTION IF EXISTS audit_log_refuse_change()",
)
_SQLITE_UPGRADE = tuple(
    f"""
    CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log
    BEGIN
        SELECT RAISE(ABORT, '{_MESSAGE}: {verb} refused');
    END
    """
    for verb in ("UPDATE", "DELETE")
)
_SQLITE_DOWNGRADE = (
    "DROP TRIGGER IF EXISTS audit_log_no_update",
    "DROP TRIGGER IF EXISTS audit_log_no_delete",
)


def _statements(upgrade: bool) -> tuple[str, ...]:
    dialect = op.get_context().dialect.name  # works offline (--sql) as well as online
    if dialect == "postgresql":
        return _PG_UPGRADE if upgrade else _PG_DOWNGRADE
    if dialect == "sqlite":
        return _SQLITE_UPGRADE if upgrade else _SQLITE_DOWNGRADE
    return ()  # MetaSentry stores on SQLite and PostgreSQL only (storage.url)


def upgrade() -> None:
    for statement in _statements(upgrade=True):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(upgrade=False):
        op.execute(statement)
