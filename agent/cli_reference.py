"""``metasentry reference list|show|rollback``: the versions of what "normal" is.

Versions exist when ``reference.mode`` is ``rolling`` or ``approved``; each window detector of
each source has its own history, one version active. A rollback here is picked up by a running
agent within ``reference.poll_s`` (at its next batch). The commands work on the agent's
database, whether or not an agent is running.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from agent.cli_common import config_option, emit_json, load_or_exit, open_store
from storage.audit import cli_origin
from storage.urls import redact_text


def _fail(error: Exception) -> None:
    click.echo(f"error: {redact_text(str(error))}", err=True)
    sys.exit(1)


@click.group()
def reference() -> None:
    """Reference versions: list them, show one, roll back to one."""


@reference.command("list")
@config_option
@click.option("--source", default=None, help="Only this source.")
@click.option("--detector", default=None, help="Only this window detector.")
@click.option("--candidates", is_flag=True,
              help="Drift windows kept for approval (label their incident benign_drift).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def reference_list(config_path: Path, source: str | None, detector: str | None,
                   candidates: bool, limit: int, as_json: bool) -> None:
    """Versions per source and detector, newest first (or candidates)."""
    from storage import StoreUnavailable

    config = load_or_exit(config_path)
    try:
        rows = open_store(config).list_references(source=source, detector=detector,
                                                  candidates=candidates, limit=limit)
    except StoreUnavailable as error:
        _fail(error)
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    if not rows:
        click.echo("no reference candidates" if candidates else
                   f"no reference versions (reference.mode is {config.reference.mode}; versions "
                   "are kept in rolling and approved modes)")
        return
    click.echo(f"{'ID':>5} {'SOURCE':16} {'DETECTOR':16} {'VERSION':>7} {'ORIGIN':9} "
               f"{'STATUS':10} {'RECORDS':>7} {'PARENT':>6}  CREATED / NOTE")
    for r in rows:
        note = r.note or r.incident_key or ""
        click.echo(f"{r.id:>5} {r.source[:16]:16} {r.detector[:16]:16} "
                   f"{'-' if r.version is None else r.version:>7} {r.origin:9} {r.status:10} "
                   f"{r.n_records:>7} {r.parent or '-':>6}  "
                   f"{r.created_at:%Y-%m-%d %H:%M:%S} {(r.actor or '')[:16]} {note[:60]}")


@reference.command("show")
@config_option
@click.argument("reference_id", type=click.IntRange(1, 2**31 - 1))
def reference_show(config_path: Path, reference_id: int) -> None:
    """One version or candidate, with its per-feature summary, as JSON."""
    from storage import ReferenceVersionNotFound, StoreUnavailable

    config = load_or_exit(config_path)
    try:
        emit_json(open_store(config).get_reference(reference_id).to_dict())
    except (StoreUnavailable, ReferenceVersionNotFound) as error:
        _fail(error)


@reference.command("rollback")
@config_option
@click.option("--source", required=True)
@click.option("--detector", required=True)
@click.option("--to", "version", type=click.IntRange(1, 2**31 - 1), required=True,
              help="The version number to make active again (as a new version).")
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
@click.option("--note", default=None)
def reference_rollback(config_path: Path, source: str, detector: str, version: int,
                       actor: str, note: str | None) -> None:
    """Make an earlier version of SOURCE/DETECTOR's reference the active one again."""
    from storage import ReferenceVersionNotFound, StoreUnavailable

    config = load_or_exit(config_path)
    try:
        row = open_store(config).rollback_reference(source, detector, version, actor=actor,
                                                    note=note, origin=cli_origin())
    except (StoreUnavailable, ReferenceVersionNotFound, ValueError) as error:
        _fail(error)
    click.echo(f"{source}/{detector}: reference version {row.version} (a copy of version "
               f"{version}, {row.n_records} records) is active; a running agent tests against "
               f"it within {config.reference.poll_s:g} s")
