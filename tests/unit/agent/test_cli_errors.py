"""Command-line failures a user meets: one line, exit code, and never a credential or traceback."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli import main
from agent.service import default_source_name
from tests.conftest import SAMPLE
from tests.pg import private_schema_url

SECRET = "hunter2-q"
DOWN_URL = f"postgresql+psycopg://svc:{SECRET}@127.0.0.1:1/db?sslpassword={SECRET}"


def _run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def _error_lines(result: Result) -> list[str]:
    """What stderr holds besides log lines (which start with a timestamp)."""
    return [line for line in result.stderr.splitlines()
            if line.strip() and not line[:4].isdigit()]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with private_schema_url("metasentry_cli") as url:
        yield url


@pytest.mark.parametrize("command", [
    ["incidents", "list", "--config"], ["incidents", "show", "1", "--config"],
    ["label", "1", "port-scan", "--config"], ["db", "upgrade", "--config"],
])
def test_database_down_is_one_line_without_the_password(write_config: Callable[..., Path],
                                                        command: list[str]) -> None:
    result = _run(*command, str(write_config(**{"storage.url": DOWN_URL})))
    assert result.exit_code == 1, result.output
    lines = _error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "unavailable" in lines[0] and "Traceback" not in result.output
    assert SECRET not in result.output


@pytest.mark.postgres
def test_db_upgrade_line_hides_a_query_string_password(write_config: Callable[..., Path],
                                                       pg_url: str) -> None:
    # The test server trusts every client, so any password connects; it must never be shown.
    path = write_config(**{"storage.url": f"{pg_url}&password={SECRET}"})
    result = _run("db", "upgrade", "--config", str(path))
    assert result.exit_code == 0, result.output
    assert "password=***" in result.stdout and SECRET not in result.output


@pytest.mark.postgres
def test_a_reserved_character_password_from_the_environment_connects(
        write_config: Callable[..., Path], pg_url: str) -> None:
    user_and_rest = pg_url.split("://", 1)[1]
    user, rest = user_and_rest.split("@", 1)
    template = f"postgresql+psycopg://{user.split(':')[0]}:${{PGPASS_FOR_TEST}}@{rest}"
    path = write_config(**{"storage.url": template})
    result = _run("db", "upgrade", "--config", str(path),
                  env={"PGPASS_FOR_TEST": "p@ss:w/rd#1?x"})
    assert result.exit_code == 0, result.output
    assert "p@ss" not in result.output and "rd#1" not in result.output


def test_replay_of_a_file_with_a_very_long_name(write_config: Callable[..., Path],
                                                tmp_path: Path) -> None:
    with gzip.open(SAMPLE / "stream.csv.gz", "rt") as sample:
        lines = [next(sample) for _ in range(200)]
    data = tmp_path / ("traffic-" + "x" * 238 + ".csv")  # 250 characters, under NAME_MAX
    data.write_text("".join(lines))
    result = _run("replay", "--config", str(write_config()), "--json", str(data))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["records"] == 200 and summary["source"] == default_source_name(data)
    again = _run("replay", "--config", str(write_config()), "--json", str(data))
    assert json.loads(again.stdout)["records"] == 0  # same source: the rerun resumes at the end


def test_long_source_names_stay_unique_and_fit_the_store() -> None:
    a = default_source_name(Path("a" * 300 + "-monday.csv"))
    b = default_source_name(Path("a" * 300 + "-tuesday.csv"))
    assert len(a) <= 255 and len(b) <= 255 and a != b
    assert a == default_source_name(Path("a" * 300 + "-monday.csv"))
    assert default_source_name(Path("day 1.csv")) == "replay:day_1.csv"


def test_replay_rejects_an_overlong_source_name(write_config: Callable[..., Path]) -> None:
    data = SAMPLE / "stream.csv.gz"
    result = _run("replay", "--config", str(write_config()), "--source-name", "s" * 256,
                  str(data))
    assert result.exit_code == 2
    assert "--source-name" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args, field", [
    (["1", "   "], "label"),
    (["1", "x" * 101], "label"),
    (["--actor", "\x1b[2J", "1", "x"], "actor"),
])
def test_label_follows_the_api_rules(write_config: Callable[..., Path], args: list[str],
                                     field: str) -> None:
    result = _run("label", "--config", str(write_config()), *args)
    assert result.exit_code == 2
    lines = _error_lines(result)
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: ")
