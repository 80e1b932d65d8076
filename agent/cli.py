"""The ``metasentry`` command line.

Commands: ``run``, ``check-config``, ``replay``, ``incidents list|show``, ``label``,
``labels list|release``, ``adapt``, ``models list|show|activate|rollback``,
``reference list|show|rollback``, ``audit``, ``db upgrade``,
and the meta-learning commands ``meta-train`` and ``fewshot-eval``.
A configuration problem is printed as one line per error and exits 2, never as a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from agent.cli_common import EXIT_CONFIG, config_option, emit_json, load_or_exit, open_store
from agent.config import ConfigError, load_config
from agent.version import __version__
from storage.urls import redact_text

log = logging.getLogger(__name__)

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="metasentry")
def main() -> None:
    """MetaSentry: security monitoring for the data streams around ML systems."""


@main.command("check-config")
@click.argument("config_path", type=click.Path(path_type=Path, dir_okay=False))
def check_config(config_path: Path) -> None:
    """Validate CONFIG_PATH and check its schema against the data files; print every error
    (exit 2) or a redacted summary (exit 0)."""
    from agent.data_check import data_errors

    try:
        config = load_config(config_path, need_token=False)
        errors = data_errors(config)
    except ConfigError as exc:
        errors = exc.errors
    if errors:
        for line in errors:
            click.echo(f"error: {line}", err=True)
        click.echo(f"{len(errors)} error(s) in {config_path}", err=True)
        sys.exit(EXIT_CONFIG)
    click.echo(f"{config_path}: valid (sha256 {config.sha256[:12]})")
    for note in [*config.notes, *_token_warning(config)]:
        click.echo(f"warning: {note}", err=True)
    emit_json(config.redacted_summary())


def _token_warning(config: Any) -> list[str]:
    """The API token is needed to serve the API (`run`), not to check or replay."""
    if config.api.enabled and not config.api_token():
        return [f"api.token_env: environment variable {config.api.token_env} is not set; "
                "`metasentry run` will refuse to start with the API enabled"]
    return []


@main.command()
@config_option
def run(config_path: Path) -> None:
    """Run the agent as a service until SIGTERM or Ctrl-C."""
    from agent.daemon import run_service

    config = load_or_exit(config_path, need_token=True)
    with _startup_errors():
        code = run_service(config)
    sys.exit(code)


def _check_source_name(_ctx: click.Context, _param: click.Parameter,
                       value: str | None) -> str | None:
    """``--source-name`` must fit the store's source column and be one printable line."""
    from storage.records import MAX_SOURCE_CHARS

    if value is None:
        return None
    if not value.strip() or len(value) > MAX_SOURCE_CHARS or not value.isprintable():
        raise click.BadParameter(
            f"expected 1 to {MAX_SOURCE_CHARS} printable characters (got {len(value)})")
    return value


@main.command()
@config_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after N records.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--source-name", default=None, callback=_check_source_name,
              help="Source name for offsets and incidents (default: from the file name).")
@click.argument("path", type=click.Path(path_type=Path, exists=True, dir_okay=False))
def replay(config_path: Path, limit: int | None, as_json: bool, source_name: str | None,
           path: Path) -> None:
    """Push the finite file PATH through the same pipeline and store as `run`.

    A rerun with the same file resumes after the last committed record.
    """
    from agent.replay import replay_file

    config = load_or_exit(config_path)
    for note in _token_warning(config):
        click.echo(f"warning: {note}", err=True)
    with _startup_errors():
        summary = replay_file(config, path, limit=limit, source_name=source_name,
                              progress=sys.stderr.isatty() and not as_json, tune_gc=True)
    if as_json:
        emit_json(summary)
    else:
        click.echo(format_summary(summary))


@contextlib.contextmanager
def _startup_errors() -> Iterator[None]:
    """A database that does not answer, an unreadable source or a model that cannot be
    served (other weights than pinned, another encoder, no GPU for ``device: gpu``): one line
    and exit 1.

    The line goes through :func:`redact_text`: a database error quotes the URL, and the URL
    may carry a password in its query string (which the store's own redaction misses).
    """
    from adapters.base import SourceError
    from agent.model_runtime import ModelLoadError
    from storage import StoreUnavailable

    try:
        yield
    except (StoreUnavailable, SourceError, ModelLoadError) as exc:
        # Driver messages span lines ("...refused\n\tIs the server running..."): one line.
        click.echo(f"error: {' '.join(redact_text(str(exc)).split())}", err=True)
        sys.exit(1)


def format_summary(summary: dict[str, Any]) -> str:
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(summary["rejected"].items())) or "none"
    incidents = ", ".join(f"{k} {v}" for k, v in sorted(summary["incidents"].items())) or "none"
    return "\n".join([
        f"records          {summary['records']}",
        f"processed        {summary['processed']}",
        f"rejected         {sum(summary['rejected'].values())} ({rejected})",
        f"incidents        {sum(summary['incidents'].values())} ({incidents})",
        f"drift windows    {summary['windows_tested']}",
        f"elapsed          {summary['elapsed_s']:.2f} s",
        f"throughput       {summary['records_per_s']:.0f} records/s",
        f"batch latency    p50 {summary['batch_p50_ms']:.1f} ms, "
        f"p95 {summary['batch_p95_ms']:.1f} ms",
    ])


@main.group()
def incidents() -> None:
    """Look at incidents in the database."""


@incidents.command("list")
@config_option
@click.option("--kind", default=None, help="Only this kind (drift, adversarial, ...).")
@click.option("--status", default=None,
              type=click.Choice(["open", "labelled", "dismissed", "resolved"]))
@click.option("--source", default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def incidents_list(config_path: Path, kind: str | None, status: str | None,
                   source: str | None, limit: int, as_json: bool) -> None:
    """Newest incidents first."""
    with _startup_errors():
        store = _store(config_path)
        rows = store.list_incidents(kind=kind, status=status, source=source, limit=limit)
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    if not rows:
        click.echo("no incidents")
        return
    click.echo(f"{'ID':>6}  {'CREATED':19}  {'KIND':10} {'SEVERITY':8} {'STATUS':9} "
               f"{'SOURCE':18} WHAT")
    for r in rows:
        summary = describe_incident(r)[:70]
        click.echo(f"{r.id:>6}  {r.created_at:%Y-%m-%d %H:%M:%S}  {r.kind:10} {r.severity:8} "
                   f"{r.status:9} {r.source[:18]:18} {summary}")


def describe_incident(incident: Any) -> str:
    """A few words on what an incident is about, for one-line listings."""
    top = incident.explanation.get("top_features")
    if top:
        return "moved: " + ", ".join(top)
    summary = incident.explanation.get("summary") or incident.record_excerpt or ""
    if incident.record_count > 1:
        summary = f"{summary} ×{incident.record_count}"
    return str(summary)


@incidents.command("show")
@config_option
@click.argument("incident_id", type=int)
def incidents_show(config_path: Path, incident_id: int) -> None:
    """One incident, whole, as JSON."""
    from storage import IncidentNotFound

    try:
        with _startup_errors():
            store = _store(config_path)
            incident = store.get_incident(incident_id)
            examples = store.incident_records(incident_id)
            given = store.list_labels(incident_id=incident_id)
    except IncidentNotFound:
        click.echo(f"error: no incident {incident_id}", err=True)
        sys.exit(1)
    emit_json(incident.to_dict() | {
        "examples": [{"offset_key": e.offset_key, "predicted_class": e.predicted_class,
                      "confidence": e.confidence, "record": e.fields,
                      "explanation": e.explanation} for e in examples],
        "labels": [g.to_dict() for g in given],
    })


@main.command()
@config_option
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
@click.option("--note", default=None)
@click.option("--record", "records", multiple=True, metavar="OFFSET",
              help="Label only this example record of the incident (repeatable); default: all.")
@click.argument("incident_id", type=int)
@click.argument("label")
def label(config_path: Path, actor: str, note: str | None, records: tuple[str, ...],
          incident_id: int, label: str) -> None:
    """Give incident INCIDENT_ID the class LABEL (`benign` or a new name are classes too).

    The label applies to the incident's example records (see `incidents show`); once a class
    has adaptation.min_labels new labels, the agent adapts to them.
    """
    from pydantic import ValidationError

    from agent.api_inputs import LabelRequest
    from storage import IncidentNotFound
    from storage.audit import cli_origin

    try:  # the API's rules: a label is a label whichever way it comes in
        request = LabelRequest(label=label, actor=actor, note=note)
    except ValidationError as exc:
        for error in exc.errors():
            click.echo(f"error: {error['loc'][0]}: {error['msg']}", err=True)
        sys.exit(EXIT_CONFIG)
    try:
        with _startup_errors():
            incident, given = _store(config_path).apply_label(
                incident_id, request.label, actor=request.actor, note=request.note,
                records=list(records) or None, origin=cli_origin())
    except IncidentNotFound:
        click.echo(f"error: no incident {incident_id}", err=True)
        sys.exit(1)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    learnable = [g for g in given if g.status == "pending"]
    if incident.analyst_label == "benign_drift" and incident.kind in ("drift",
                                                                      "reference_drift"):
        mode = load_or_exit(config_path).reference.mode
        click.echo(f"incident {incident.id} labelled benign_drift: " + (
            "its window is approved and joins the reference as a new version at the agent's "
            "next batch (see `metasentry reference list`)" if mode != "fixed" else
            "recorded; reference.mode is fixed, so the reference does not move"))
    elif learnable:
        click.echo(f"incident {incident.id} labelled {incident.analyst_label!r}: "
                   f"{len(learnable)} record(s) will teach the model (labels "
                   f"{', '.join(str(g.id) for g in learnable)}); see `metasentry labels list`")
    else:
        click.echo(f"incident {incident.id} labelled {incident.analyst_label!r} (it has no "
                   "example records, so the label is recorded but teaches the model nothing)")


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@config_option
def db_upgrade(config_path: Path) -> None:
    """Apply migrations up to the newest schema."""
    from storage import Store, StoreTimeouts

    config = load_or_exit(config_path)
    with _startup_errors():
        store = Store(config.storage_url(),
                      timeouts=StoreTimeouts(**config.storage.timeouts.model_dump()))
        started = time.perf_counter()
        store.upgrade()
        revision = store.current_revision()
    click.echo(f"{store.redacted_url}: at {revision} "
               f"({time.perf_counter() - started:.2f} s)")


def _store(config_path: Path) -> Any:
    return open_store(load_or_exit(config_path))


def _register_meta_commands() -> None:
    """meta-train and fewshot-eval live beside the learners they drive; labels, adapt and
    models beside the analyst loop."""
    from agent.cli_audit import audit
    from agent.cli_meta import fewshot_eval, meta_train
    from agent.cli_model import adapt, labels, models
    from agent.cli_reference import reference

    for command in (meta_train, fewshot_eval, labels, adapt, models, reference, audit):
        main.add_command(command)


_register_meta_commands()
