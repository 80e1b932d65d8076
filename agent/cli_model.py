"""``metasentry labels``, ``adapt`` and ``models``: the analyst loop from the command line.

These commands work on the database the agent uses, so they work whether or not an agent is
running: labels given here are picked up by a running agent within
``adaptation.check_interval_s``, and a version activated here is served by every running agent
within ``model.poll_interval_s``. ``adapt`` and ``models activate|rollback`` rebuild models, so
they fit the reference and load the model weights like the agent does (a few seconds).

The commands are registered on the main ``metasentry`` group by ``agent.cli``; they do not
import it (that module imports this one).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from agent.cli_common import config_option, emit_json, load_or_exit, open_store
from agent.config import AgentConfig
from storage.audit import cli_origin
from storage.urls import redact_text

EXIT_USAGE = 2


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Expected failures (database down, unknown id, a model that cannot load): one line."""
    from agent.model_runtime import ModelLoadError
    from storage import LabelNotFound, ModelVersionNotFound, StoreUnavailable

    try:
        yield
    except (StoreUnavailable, ModelLoadError, LabelNotFound, ModelVersionNotFound,
            ValueError) as exc:
        click.echo(f"error: {redact_text(str(exc))}", err=True)
        sys.exit(1)


def _running_model(config: AgentConfig) -> Any:
    """An agent with the registry's active model loaded (nothing attached, nothing run)."""
    from agent.service import Agent

    if not config.model.enabled:
        click.echo("error: model.enabled is false in this config: there is no live model",
                   err=True)
        sys.exit(EXIT_USAGE)
    agent = Agent(config)
    agent.prepare()
    return agent


# --- labels ---------------------------------------------------------------------------------


@click.group()
def labels() -> None:
    """Analyst labels and what screening and adaptation made of them."""


@labels.command("list")
@config_option
@click.option("--status", default=None,
              type=click.Choice(["pending", "held", "released", "used", "rejected", "noted"]))
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def labels_list(config_path: Path, status: str | None, limit: int, as_json: bool) -> None:
    """Labels, oldest first, with their status (held ones with the reason)."""
    config = load_or_exit(config_path)
    with _one_line_errors():
        rows = open_store(config).list_labels(status=status, limit=limit)
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    if not rows:
        click.echo("no labels")
        return
    click.echo(f"{'ID':>6} {'INCIDENT':>8} {'LABEL':16} {'ACTOR':12} {'STATUS':9} "
               f"{'VERSION':7} WHY")
    for r in rows:
        click.echo(f"{r.id:>6} {r.incident_id:>8} {r.label[:16]:16} {r.actor[:12]:12} "
                   f"{r.status:9} {r.model_version or '':7} {(r.status_reason or '')[:80]}")


@labels.command("release")
@config_option
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
@click.argument("label_id", type=click.IntRange(1, 2**31 - 1))
def labels_release(config_path: Path, actor: str, label_id: int) -> None:
    """Override screening: held label LABEL_ID may teach at the next adaptation."""
    config = load_or_exit(config_path)
    with _one_line_errors():
        label = open_store(config).release_label(label_id, actor=actor, origin=cli_origin())
    click.echo(f"label {label.id} ({label.label!r} by {label.actor}) released by {actor}; "
               "it is used at the next adaptation")


# --- adaptation -----------------------------------------------------------------------------


@click.command("adapt")
@config_option
@click.option("--force", is_flag=True,
              help="Adapt even if no class has adaptation.min_labels new labels.")
@click.option("--json", "as_json", is_flag=True)
def adapt(config_path: Path, force: bool, as_json: bool) -> None:
    """Screen pending labels, build a candidate version, check it, and activate it if it passes."""
    config = load_or_exit(config_path)
    with _one_line_errors():
        agent = _running_model(config)
        try:
            outcome = agent.adapter.run("cli: metasentry adapt", force=force)
        finally:
            agent.close()
    if as_json:
        emit_json(outcome.to_dict())
    else:
        click.echo(describe_outcome(outcome.to_dict()))
    sys.exit(0 if outcome.status in ("activated", "waiting", "nothing_pending") else 1)


def describe_outcome(outcome: dict[str, Any]) -> str:
    """One adaptation run, in a few lines."""
    held = outcome["labels_held"]
    lines = [f"adaptation: {outcome['status']}"
             + (f" (version {outcome['version']})" if outcome["version"] else "")
             + f" in {outcome['seconds'] * 1000:.0f} ms"]
    if outcome["labels_used"]:
        lines.append(f"labels enrolled: {len(outcome['labels_used'])}")
    for label_id, reason in held.items():
        lines.append(f"label {label_id} held: {reason}")
    lines.extend(f"reason: {reason}" for reason in outcome["reasons"])
    canary = outcome.get("canary", {}).get("canary")
    if canary:
        lines.append(f"canary: known-class accuracy {canary['known_accuracy']:.1%}, benign "
                     f"false-alarm rate {canary['benign_false_alarm_rate']:.2%}")
    return "\n".join(lines)


# --- models ---------------------------------------------------------------------------------


@click.group()
def models() -> None:
    """The model registry: versions, their checks, and which one serves."""


@models.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True)
def models_list(config_path: Path, as_json: bool) -> None:
    """Versions, newest first."""
    config = load_or_exit(config_path)
    with _one_line_errors():
        rows = open_store(config).list_model_versions()
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    if not rows:
        click.echo("no model versions (the agent creates version 1 at its first start)")
        return
    click.echo(f"{'VERSION':>7}  {'STATUS':9} {'PARENT':>6}  {'ALGORITHM':9} {'CLASSES':>7} "
               f"{'LABELS':>6}  {'CANARY ACC':>10} {'BENIGN FA':>9}  TRIGGER")
    for r in rows:
        canary = (r.metrics or {}).get("canary") or {}
        accuracy = canary.get("known_accuracy")
        false_alarms = canary.get("benign_false_alarm_rate")
        click.echo(
            f"{r.version:>7}  {r.status:9} {r.parent or '-':>6}  {r.algorithm:9} "
            f"{len(r.classes or []):>7} {len(r.label_ids):>6}  "
            f"{'-' if accuracy is None else f'{accuracy:.1%}':>10} "
            f"{'-' if false_alarms is None else f'{false_alarms:.2%}':>9}  "
            f"{(r.trigger or '')[:60]}")


@models.command("show")
@config_option
@click.argument("version")
def models_show(config_path: Path, version: str) -> None:
    """One version, whole, as JSON."""
    config = load_or_exit(config_path)
    with _one_line_errors():
        emit_json(open_store(config).get_model_version(version).to_dict())


@models.command("activate")
@config_option
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
@click.argument("version")
def models_activate(config_path: Path, actor: str, version: str) -> None:
    """Serve VERSION (after checking it rebuilds to its recorded sha256)."""
    config = load_or_exit(config_path)
    with _one_line_errors():
        agent = _running_model(config)
        try:
            active = agent.runtime.activate(version, actor=actor, origin=cli_origin())
        finally:
            agent.close()
    click.echo(f"model version {active.version} is active (sha256 {active.sha256[:12]}…); "
               f"running agents serve it within {config.model.poll_interval_s:g} s")


@models.command("rollback")
@config_option
@click.option("--actor", default=lambda: os.environ.get("USER", "cli"), show_default="$USER")
def models_rollback(config_path: Path, actor: str) -> None:
    """Serve the version the active one replaced."""
    config = load_or_exit(config_path)
    with _one_line_errors():
        agent = _running_model(config)
        try:
            active = agent.runtime.rollback(actor=actor, origin=cli_origin())
        finally:
            agent.close()
    click.echo(f"rolled back: model version {active.version} is active; running agents serve "
               f"it within {config.model.poll_interval_s:g} s")
