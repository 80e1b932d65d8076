"""Log lines, text or JSON, never carry a credential: the filter on every handler masks them."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.logs import configure_logging
from storage import Store

SECRET = "qs-s3cr3t"


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("json_format", [False, True])
def test_store_opened_line_hides_a_query_string_password(
        json_format: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json_format=json_format)
    # A URL that never connects: opening a store only parses it and logs "store opened at".
    Store(f"postgresql+psycopg://svc:{SECRET}@127.0.0.1:1/db?sslpassword={SECRET}"
          f"&password={SECRET}").close()
    err = capsys.readouterr().err
    assert "store opened at" in err
    assert SECRET not in err


@pytest.mark.parametrize("json_format", [False, True])
def test_arguments_extras_and_tracebacks_are_redacted(
        json_format: bool, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json_format=json_format)
    log = logging.getLogger("metasentry.test")
    url = f"postgresql://u@h/db?password={SECRET}"
    log.warning("database unavailable (%s); retrying", RuntimeError(f"at {url}"),
                extra={"url": url, "password": SECRET})
    try:
        raise ConnectionError(f"connect failed: host=h password={SECRET}")
    except ConnectionError:
        log.exception("upgrade failed")
    err = capsys.readouterr().err
    assert "database unavailable" in err and "upgrade failed" in err
    assert SECRET not in err
    if json_format:
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert lines[0]["url"].endswith("password=***") and lines[0]["password"] == "***"
        assert "ConnectionError" in lines[1]["exc"]


def test_a_broken_format_string_still_logs_without_the_raw_argument(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    logging.getLogger("metasentry.test").info("two %s %s", f"password={SECRET}")
    err = capsys.readouterr().err
    assert "two" in err and SECRET not in err
