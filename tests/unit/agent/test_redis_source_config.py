"""A ``redis_stream`` entry of ``sources:``: every mistake named by its YAML path, the URL's
secret only from the environment and never printed, and the source it builds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from adapters import RedisStreamSource
from agent.cli import main
from agent.config import ConfigError, load_config
from agent.service import build_source

SECRET = "r3dis-pa55@word"


def redis_source(**overrides: Any) -> dict[str, Any]:
    return {"type": "redis_stream", "name": "events",
            "url": "redis://agent:${TEST_REDIS_PASSWORD}@cache.internal:6379/2",
            "stream": "events", "group": "agents", "field": "data", "format": "csv"} | overrides


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, need_token=False)
    return caught.value.errors


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TEST_REDIS_PASSWORD", SECRET)
    return SECRET


def test_a_valid_entry_builds_the_source_with_its_defaults(
        write_config: Callable[..., Path]) -> None:
    config = load_config(write_config(sources=[redis_source()]), need_token=False)
    spec = config.sources[0]
    assert (spec.type, spec.consumer, spec.start_id, spec.max_deliveries) == (
        "redis_stream", None, "$", 10)
    source = build_source(config, spec)
    assert isinstance(source, RedisStreamSource)
    assert (source.stream, source.group, source.dead_letter_stream) == (
        "events", "agents", "events:dead")
    assert source.consumer and source.position_name == f"events@{source.consumer}"
    kwargs = source._client.connection_pool.connection_kwargs
    assert (kwargs["password"], kwargs["host"], kwargs["db"]) == (SECRET, "cache.internal", 2)
    source.close()


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"url": "http://cache:6379"}, "sources[0].url: expected a redis://, rediss:// or unix:// URL"),
    ({"stream": ""}, "sources[0].stream:"),
    ({"format": "xml"}, "sources[0].format: invalid value (got 'xml', expected one of 'json' "
                        "or 'csv')"),
    ({"batch_size": 0}, "sources[0].batch_size: invalid value (got 0, expected a number > 0)"),
    ({"block_ms": "soon"}, "sources[0].block_ms: invalid value (got 'soon', expected an "
                           "integer)"),
    ({"claim_idle_s": -1}, "sources[0].claim_idle_s: invalid value (got -1, expected a "
                           "number > 0.0)"),
    ({"max_deliveries": 0}, "sources[0].max_deliveries: invalid value (got 0, expected a "
                            "number >= 1)"),
    ({"start_id": ">"}, "sources[0].start_id: invalid value (got '>', expected one of '$' or "
                        "'0')"),
    ({"consumer": "two words"}, "sources[0].consumer: invalid value (got 'two words'"),
    ({"maxlen": 5}, "sources[0].maxlen: unknown key (remove it or check its spelling)"),
    ({"field": None, "format": "json"}, "sources[0]: `format:` says how `field:` is written"),
    ({"dead_letter_stream": "events"}, "sources[0]: `dead_letter_stream:` must differ"),
])
def test_a_bad_value_names_its_field(write_config: Callable[..., Path],
                                     overrides: dict[str, Any], expected: str) -> None:
    errors = errors_of(write_config(sources=[redis_source(**overrides)]))
    assert any(line.startswith(expected) for line in errors), errors


def test_every_bad_value_is_reported_at_once(write_config: Callable[..., Path]) -> None:
    errors = errors_of(write_config(sources=[redis_source(block_ms=0, batch_size=0,
                                                          start_id="x")]))
    assert {line.split(":")[0] for line in errors} == {
        "sources[0].block_ms", "sources[0].batch_size", "sources[0].start_id"}


def test_an_unquoted_zero_start_id_means_the_whole_stream(
        write_config: Callable[..., Path]) -> None:
    path = write_config(sources=[redis_source()])
    path.write_text(path.read_text().replace("format: csv", "format: csv\n  start_id: 0"))
    assert load_config(path, need_token=False).sources[0].start_id == "0"


def test_csv_lines_need_schema_columns(write_config: Callable[..., Path]) -> None:
    path = write_config(**{"sources": [redis_source()], "schema.columns": None,
                           "schema.label": None, "reference.path": "unused.csv"})
    assert errors_of(path) == [
        "sources[0].format: csv lines have no header in a stream (got 'csv', expected "
        "`schema.columns` to name the cells, or format json)"]


def test_a_missing_secret_and_a_broken_url_are_named(write_config: Callable[..., Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_REDIS_PASSWORD")
    errors = errors_of(write_config(sources=[redis_source()]))
    assert "sources[0].url: environment variable TEST_REDIS_PASSWORD is not set (expected a " \
           "secret)" in errors
    errors = errors_of(write_config(sources=[redis_source(url="redis://cache:notaport/0")]))
    assert errors == ["sources[0].url: not a valid Redis URL once the environment is "
                      "substituted (got 'redis://cache:notaport/0'; expected "
                      "redis://[user:password@]host[:port][/db])"]


def test_the_consumer_name_may_come_from_the_environment(
        write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(sources=[redis_source(consumer="${TEST_POD_NAME}")])
    assert errors_of(path) == ["sources[0].consumer: environment variable TEST_POD_NAME is not "
                               "set (expected this replica's name)"]
    monkeypatch.setenv("TEST_POD_NAME", "ingest 0")
    assert errors_of(path) == ["sources[0].consumer: empty or holds spaces once the environment "
                               "is substituted (got 'ingest 0', expected a name without spaces)"]
    monkeypatch.setenv("TEST_POD_NAME", "ingest-0")
    config = load_config(path, need_token=False)
    source = build_source(config, config.sources[0])
    assert isinstance(source, RedisStreamSource)
    assert (source.consumer, source.position_name) == ("ingest-0", "events@ingest-0")
    source.close()


def test_check_config_accepts_it_and_never_prints_the_password(
        write_config: Callable[..., Path]) -> None:
    path = write_config(sources=[redis_source(url=f"redis://agent:{SECRET}@cache:6379/0")])
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["sources"][0]["url"] == "redis://agent:***@cache:6379/0"


def test_check_config_names_the_field_of_a_bad_value(write_config: Callable[..., Path]) -> None:
    path = write_config(sources=[redis_source(claim_idle_s=0)])
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 2
    assert "error: sources[0].claim_idle_s: invalid value (got 0, expected a number > 0.0)" in (
        result.output)
