"""An ``http_ingest`` entry of ``sources:``: its defaults, its limits checked against the API's,
and the source it builds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.http_ingest import HttpIngestSource
from agent.config import ConfigError, HttpIngestSourceConfig, load_config
from agent.service import build_source


def ingest(**overrides: Any) -> dict[str, Any]:
    return {"type": "http_ingest"} | overrides


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, need_token=False)
    return caught.value.errors


def test_defaults_build_a_bounded_source(write_config: Callable[..., Path]) -> None:
    config = load_config(write_config(**{"sources": [ingest()], "api.enabled": True}),
                         need_token=False)
    spec = config.sources[0]
    assert isinstance(spec, HttpIngestSourceConfig)
    assert (spec.name, spec.max_body_bytes, spec.wait_timeout_s) == ("http", None, 30.0)
    source = build_source(config, spec)
    assert isinstance(source, HttpIngestSource)
    assert (source.max_queue_records, source.max_queue_bytes) == (100_000, 64 * 1024 * 1024)


def test_settings_reach_the_source(write_config: Callable[..., Path]) -> None:
    config = load_config(write_config(**{
        "sources": [ingest(name="edge", max_queue_records=7, max_queue_bytes=2_000_000,
                           remember_keys=3)],
        "api.enabled": True}), need_token=False)
    source = build_source(config, config.sources[0])
    assert isinstance(source, HttpIngestSource)
    assert (source.name, source.max_queue_records, source.max_queue_bytes,
            source.remember_keys) == ("edge", 7, 2_000_000, 3)


def test_every_mistake_is_named_at_once(write_config: Callable[..., Path]) -> None:
    errors = errors_of(write_config(**{
        "sources": [ingest(max_body_bytes=5_000_000, max_queue_bytes=1000),
                    ingest(name="again")],
        "api.enabled": False, "api.max_body_bytes": 1_000_000}))
    assert any(e.startswith("sources[1].type: only one http_ingest") for e in errors), errors
    assert any(e.startswith("sources[0].type: http_ingest receives records through the API")
               for e in errors), errors
    assert any(e.startswith("sources[0].max_body_bytes: larger than api.max_body_bytes")
               for e in errors), errors
    assert any(e.startswith("sources[0].max_queue_bytes: smaller than one request body")
               for e in errors), errors


@pytest.mark.parametrize(("field", "value"), [
    ("max_queue_records", 0), ("wait_timeout_s", 0), ("max_body_bytes", 0),
    ("remember_keys", -1), ("unknown", 1)])
def test_bad_values_are_refused_by_path(write_config: Callable[..., Path], field: str,
                                        value: Any) -> None:
    errors = errors_of(write_config(**{"sources": [ingest(**{field: value})],
                                       "api.enabled": True}))
    assert any(e.startswith(f"sources[0].{field}") for e in errors), errors
