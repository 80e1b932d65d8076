"""What every ``metasentry`` command shares: the ``--config`` option, loading it, the store.

``agent.cli``, ``agent.cli_meta`` and ``agent.cli_model`` all take their config the same way
and fail the same way: every configuration error printed as one ``error:`` line, exit 2, never
a traceback. They import this module rather than each other (``agent.cli`` registers the
other two).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import orjson

from agent.config import DEFAULT_CONFIG_PATH, AgentConfig, ConfigError, load_config
from agent.logs import configure_logging

if TYPE_CHECKING:
    from storage import Store

log = logging.getLogger(__name__)

EXIT_CONFIG = 2
F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    return click.option(
        "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
        default=lambda: os.environ.get("METASENTRY_CONFIG", str(DEFAULT_CONFIG_PATH)),
        show_default="agent.yaml or $METASENTRY_CONFIG", help="The agent's YAML configuration.",
    )(func)


def load_or_exit(path: Path, *, need_token: bool = False) -> AgentConfig:
    """Load the config or print every error and exit 2; then set up logging from it."""
    try:
        config = load_config(path, need_token=need_token)
    except ConfigError as exc:
        for line in exc.errors:
            click.echo(f"error: {line}", err=True)
        sys.exit(EXIT_CONFIG)
    configure_logging(config.logging.level, json_format=config.logging.json_format)
    for note in config.notes:
        log.warning("%s: %s", path, note)
    return config


def open_store(config: AgentConfig) -> Store:
    """The configured store (with its timeouts), its schema brought to head."""
    from storage import Store, StoreTimeouts

    store = Store(config.storage_url(),
                  timeouts=StoreTimeouts(**config.storage.timeouts.model_dump()),
                  alert_routes=config.alert_routes())
    if not store.at_head():
        store.upgrade()
    return store


def emit_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode())
