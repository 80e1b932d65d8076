"""The ``sinks:`` section of agent.yaml: every mistake named by its YAML path, secrets only
from the environment and never printed, and the routes the store queues alerts by."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.config import INCIDENT_KINDS, ConfigError, Severity, load_config
from agent.incidents import SEVERITY_BY_KIND
from detectors import DETECTOR_TYPES
from storage import SEVERITIES, AlertRoute

REPO = Path(__file__).resolve().parents[3]
KEY_ENV = "TEST_SINK_KEY"


def webhook(**overrides: Any) -> dict[str, Any]:
    return {"type": "webhook", "name": "pager", "url": "https://hooks.example.com/alerts",
            "secret_env": KEY_ENV, "min_severity": "high", "kinds": ["attack", "novel"],
            "timeout_s": 5, "max_backoff_s": 120} | overrides


def jsonl(path: Path, **overrides: Any) -> dict[str, Any]:
    return {"type": "jsonl", "name": "siem", "path": str(path)} | overrides


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, need_token=False)
    return caught.value.errors


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, "s1gning-k3y-value")
    return "s1gning-k3y-value"


def test_valid_sinks_load_into_routes(write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = load_config(write_config(sinks=[webhook(), jsonl(tmp_path / "alerts.jsonl")]),
                         need_token=False)

    assert config.alert_routes() == (
        AlertRoute("pager", min_severity="high", kinds=frozenset({"attack", "novel"})),
        AlertRoute("siem", min_severity="info", kinds=None),
    )


def test_no_sinks_is_the_default(write_config: Callable[..., Path]) -> None:
    config = load_config(write_config(), need_token=False)
    assert config.sinks == [] and config.alert_routes() == ()


def test_every_mistake_is_named_by_its_path_at_once(write_config: Callable[..., Path],
                                                   tmp_path: Path) -> None:
    path = write_config(sinks=[
        webhook(min_severity="urgent", kinds=["attack", "atack"], timeout_s=0),
        webhook(name="second", url="ftp://files.example/x", secret="the-key-itself"),
        {"type": "email", "name": "x"},
        jsonl(tmp_path / "a.jsonl", kinds=[]),
        webhook(name="fifth", url="https:///no-host"),
    ])

    errors = errors_of(path)

    assert ("sinks[0].min_severity: invalid value (got 'urgent', expected one of 'info', "
            "'low', 'medium', 'high' or 'critical')") in errors
    assert any(e.startswith("sinks[0].kinds[1]: invalid value (got 'atack', expected one of "
                            "'drift'") for e in errors), errors
    assert "sinks[0].timeout_s: invalid value (got 0, expected a number > 0.0)" in errors
    assert ("sinks[1].url: expected an http:// or https:// URL with a host "
            "(got 'ftp://files.example/x')") in errors
    assert "sinks[1].secret: unknown key (remove it or check its spelling)" in errors
    assert "sinks[2]: unknown type (got 'email', expected one of webhook, jsonl)" in errors
    assert ("sinks[3].kinds: name at least one kind, or leave `kinds:` out to send every kind "
            "(got [])") in errors
    assert ("sinks[4].url: expected an http:// or https:// URL with a host "
            "(got 'https:///no-host')") in errors
    assert "the-key-itself" not in " ".join(errors)


def test_sink_names_must_be_unique(write_config: Callable[..., Path]) -> None:
    errors = errors_of(write_config(sinks=[webhook(), webhook(url="https://other.example")]))
    assert len(errors) == 1
    assert errors[0].startswith("sinks: sink names must be unique (repeated: pager)")


def test_what_the_environment_must_provide_is_named(write_config: Callable[..., Path],
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.delenv(KEY_ENV)
    path = write_config(sinks=[
        webhook(url="https://hooks.example.com/a?token=${HOOK_TOKEN_UNSET}"),
        jsonl(tmp_path / "no-such-dir" / "alerts.jsonl"),
        jsonl(tmp_path, name="dir"),
    ])

    errors = errors_of(path)

    assert (f"sinks[0].secret_env: environment variable {KEY_ENV} is not set or empty "
            "(expected the webhook's signing key)") in errors
    assert ("sinks[0].url: environment variable HOOK_TOKEN_UNSET is not set "
            "(expected a secret)") in errors
    assert (f"sinks[1].path: directory not found (got '{tmp_path / 'no-such-dir'}', expected "
            "an existing directory for the alert file)") in errors
    assert f"sinks[2].path: is a directory (got '{tmp_path}', expected a file)" in errors


def test_a_url_broken_by_the_environment_is_named_without_the_secret(
        write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_PORT", "not-a-port")
    errors = errors_of(write_config(sinks=[webhook(url="https://h.example:${HOOK_PORT}/x")]))
    assert errors == ["sinks[0].url: not a valid http(s) URL once the environment is "
                      "substituted (got 'https://h.example:${HOOK_PORT}/x')"]


def test_check_config_shows_sinks_with_credentials_masked(write_config: Callable[..., Path],
                                                         key: str) -> None:
    url = "https://svc:hunter2@hooks.example.com/alerts?token=tok-123&team=sec"
    path = write_config(sinks=[webhook(url=url)])

    result = CliRunner().invoke(main, ["check-config", str(path)],
                                env={KEY_ENV: key, "METASENTRY_API_TOKEN": "t"})

    assert result.exit_code == 0, result.output
    assert "https://svc:***@hooks.example.com/alerts?token=***&team=sec" in result.output
    assert '"secret": "set"' in result.output
    for secret in ("hunter2", "tok-123", key):
        assert secret not in result.output


def test_check_config_names_a_bad_sink_and_exits_2(write_config: Callable[..., Path]) -> None:
    path = write_config(sinks=[webhook(min_severity="loud")])
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 2
    assert "error: sinks[0].min_severity: invalid value (got 'loud'" in result.output


def test_the_severity_vocabulary_is_the_stores() -> None:
    assert get_args(Severity) == SEVERITIES


def test_every_kind_the_agent_creates_can_be_named_in_a_sink() -> None:
    """Kinds come from detectors, the incident policy and a few agent modules; a kind missing
    from INCIDENT_KINDS could never be routed to a sink by name."""
    created = set(SEVERITY_BY_KIND) | {"drift"}
    created |= {getattr(cls, "kind", None) for cls in DETECTOR_TYPES.values()} - {None}
    created |= {"attack", "novel"}  # the classifier's per-record kinds
    for module in (REPO / "agent").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "NewIncident":
                created |= {k.value.value for k in node.keywords if k.arg == "kind"
                            and isinstance(k.value, ast.Constant)}
    assert created <= set(INCIDENT_KINDS), created - set(INCIDENT_KINDS)
