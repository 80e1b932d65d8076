"""`metasentry incidents list|show`, `label` and `db upgrade` against a real SQLite store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from agent.cli import main
from agent.config import load_config
from storage import NewIncident, Store


def _seed(config_path: Path) -> Store:
    store = Store(load_config(config_path, need_token=False).storage_url())
    store.upgrade()
    store.commit_batch(source="s", position=None, incidents=[
        NewIncident(kind=kind, severity="high", source="s", offset_key=f"k{i}",
                    detector="feature_drift", explanation={"summary": f"summary {i}"})
        for i, kind in enumerate(["drift", "drift", "adversarial"])])
    return store


def test_db_upgrade_then_list_and_show(write_config: Callable[..., Path]) -> None:
    config_path = write_config()
    runner = CliRunner()
    upgraded = runner.invoke(main, ["db", "upgrade", "--config", str(config_path)])
    assert upgraded.exit_code == 0, upgraded.output
    assert "at " in upgraded.output
    _seed(config_path)

    listed = runner.invoke(main, ["incidents", "list", "--config", str(config_path), "--json",
                                  "--kind", "drift"])
    rows = json.loads(listed.stdout)
    assert [r["kind"] for r in rows] == ["drift", "drift"]
    table = runner.invoke(main, ["incidents", "list", "--config", str(config_path)])
    assert "adversarial" in table.output and "summary 2" in table.output

    shown = runner.invoke(main, ["incidents", "show", "--config", str(config_path),
                                 str(rows[0]["id"])])
    assert json.loads(shown.stdout)["id"] == rows[0]["id"]
    missing = runner.invoke(main, ["incidents", "show", "--config", str(config_path), "999"])
    assert missing.exit_code == 1 and "no incident 999" in missing.output


def test_label_from_the_cli(write_config: Callable[..., Path]) -> None:
    config_path = write_config()
    store = _seed(config_path)
    first = store.list_incidents(limit=1)[0]
    result = CliRunner().invoke(main, ["label", "--config", str(config_path), "--actor", "ana",
                                       str(first.id), "port-scan"])
    assert result.exit_code == 0, result.output
    labelled = store.get_incident(first.id)
    assert labelled.analyst_label == "port-scan" and labelled.status == "labelled"
    assert store.list_labels()[0].actor == "ana"
