"""``metasentry audit``: who changed what the agent believes, from where (``storage.audit``).

Read-only, like the log itself: rows are appended by the changes they record. Works on the
agent's database whether or not an agent is running.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from agent.cli_common import config_option, emit_json, load_or_exit, open_store
from storage import AUDIT_ACTIONS
from storage.urls import redact_text

EXIT_USAGE = 2


def _since(value: str | None) -> datetime | None:
    """An ISO 8601 instant; without an offset it is read as UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        return (parsed.astimezone(UTC) if parsed.utcoffset() is not None
                else parsed.replace(tzinfo=UTC))
    except (ValueError, OverflowError):
        click.echo(f"error: --since: expected an ISO 8601 time such as 2026-12-01T09:30:00Z, "
                   f"got {value!r}", err=True)
        sys.exit(EXIT_USAGE)


@click.command("audit")
@config_option
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--action", default=None, type=click.Choice(AUDIT_ACTIONS))
@click.option("--actor", default=None, help="Only what this actor did.")
@click.option("--since", default=None, metavar="ISO",
              help="Only rows at or after this time (ISO 8601; UTC without an offset).")
@click.option("--json", "as_json", is_flag=True)
def audit(config_path: Path, limit: int, action: str | None, actor: str | None,
          since: str | None, as_json: bool) -> None:
    """The audit log, newest first: labels, model and reference changes, who and from where."""
    from storage import StoreUnavailable

    since_at = _since(since)
    config = load_or_exit(config_path)
    try:
        rows = open_store(config).list_audit(limit=limit, action=action, actor=actor,
                                             since=since_at)
    except (StoreUnavailable, ValueError) as error:
        click.echo(f"error: {redact_text(str(error))}", err=True)
        sys.exit(1)
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    if not rows:
        click.echo("no audit rows")
        return
    click.echo(f"{'ID':>6} {'AT (UTC)':19} {'ACTOR':12} {'ACTION':18} {'TARGET':32} ORIGIN")
    for r in rows:
        click.echo(f"{r.id:>6} {r.at:%Y-%m-%d %H:%M:%S} {r.actor[:12]:12} {r.action:18} "
                   f"{r.target[:32]:32} {r.origin[:60]}")
