"""agent.yaml validation: each class of mistake gets its own clear line and exit code 2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import make_url

from agent.cli import main
from agent.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[3]


def _check(path: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["check-config", str(path)], env=env or {})
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("METASENTRY_API_TOKEN", "s3cret-token-value")
    return "s3cret-token-value"


def test_shipped_agent_yaml_is_valid(token: str) -> None:
    config = load_config(REPO / "agent.yaml")
    assert config.storage.url == "sqlite:///var/metasentry.db"
    assert config.metrics.listen == "127.0.0.1:9108"
    assert config.api.listen == "127.0.0.1:8080"
    assert config.storage_url() == f"sqlite:///{REPO / 'var' / 'metasentry.db'}"


def test_valid_file_prints_redacted_summary(write_config: Callable[..., Path], token: str) -> None:
    path = write_config(**{"storage.url": "postgresql+psycopg://svc:hunter2@db/x"})
    code, out = _check(path, env={"METASENTRY_API_TOKEN": token})
    assert code == 0, out
    assert "valid" in out and "***" in out
    assert "hunter2" not in out and token not in out


def test_every_structural_error_is_reported_at_once(write_config: Callable[..., Path],
                                                    token: str) -> None:
    path = write_config(**{
        "detectors.feature_drift.window": "abc",
        "detectors.feature_drift.alpha": 2,
        "detectors.feature_drift.windw": 3,
        "sources.0.mode": "tail",
        "metrics.listen": "nowhere",
    })
    code, out = _check(path, env={"METASENTRY_API_TOKEN": token})
    assert code == 2
    assert ("detectors[0].window: expected a record count (an integer of at least 2) or a "
            "duration such as 30s, 5m, 1h or 1d (got 'abc')") in out
    assert "detectors[0].alpha: invalid value (got 2, expected a number < 1" in out
    assert "detectors[0].windw: unknown key" in out
    assert ("sources[0].mode: invalid value (got 'tail', expected one of 'follow' or "
            "'replay')") in out
    assert "metrics.listen: expected HOST:PORT" in out
    assert "Traceback" not in out


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    code, out = _check(tmp_path / "nope.yaml")
    assert code == 2
    assert "config file not found" in out and "Traceback" not in out


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("schema:\n  features: [\n    {name: a, type: numeric\nreference: 1\n")
    code, out = _check(path)
    assert code == 2
    assert "invalid YAML at line 4, column" in out


def test_missing_reference_file(write_config: Callable[..., Path], tmp_path: Path,
                                token: str) -> None:
    path = write_config(**{"reference.path": str(tmp_path / "absent.csv")})
    code, out = _check(path, env={"METASENTRY_API_TOKEN": token})
    assert code == 2
    assert "reference.path: file not found" in out


def test_missing_secret_in_environment(write_config: Callable[..., Path],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METASENTRY_API_TOKEN", raising=False)
    monkeypatch.delenv("PGPASS_FOR_TEST", raising=False)
    path = write_config(**{"api.enabled": True,
                           "storage.url": "postgresql+psycopg://u:${PGPASS_FOR_TEST}@h/db"})
    code, out = _check(path, env={})
    assert code == 2
    assert "storage.url: environment variable PGPASS_FOR_TEST is not set" in out
    # The API token is needed to serve the API: `run` refuses to start without it, while
    # check-config and replay, which serve nothing, only warn.
    code, out = _check(write_config("token.yaml", **{"api.enabled": True}), env={})
    assert code == 0, out
    assert "warning: api.token_env: environment variable METASENTRY_API_TOKEN is not set" in out
    with pytest.raises(ConfigError, match="api.token_env"):
        load_config(write_config("token2.yaml", **{"api.enabled": True}), need_token=True)


def test_unknown_source_type_and_duplicate_names() -> None:
    text = """
schema: {features: [{name: a, type: numeric}, {name: a, type: numeric}]}
reference: {path: r.csv}
sources: [{type: kafka, name: k}, {type: stdin, name: s}, {type: stdin, name: s}]
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    lines = err.value.errors
    assert any(line.startswith("schema: feature names must be unique") for line in lines)
    assert any("sources[0]: unknown type (got 'kafka'" in line for line in lines)


def test_duplicate_source_names() -> None:
    text = """
schema: {features: [{name: a, type: numeric}]}
reference: {path: r.csv}
sources: [{type: stdin, name: s}, {type: stdin, name: s}]
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert any("source names must be unique (repeated: s)" in line for line in err.value.errors)


def test_features_must_be_in_columns_and_tensor_needs_shape() -> None:
    text = """
schema:
  columns: [a, label]
  label: label
  features: [{name: a, type: numeric}, {name: b, type: tensor}]
reference: {path: r.csv}
sources: [{type: stdin}]
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    joined = "\n".join(err.value.errors)
    assert "schema.features[1]: a tensor feature needs `shape:`" in joined


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        parse_config("- just\n- a list\n")


# --- secrets substituted into storage.url ---------------------------------------------------

RESERVED_PASSWORD = "p@ss:w/rd#1?x"


@pytest.mark.parametrize("template, where", [
    ("postgresql+psycopg://svc:${PGPASS_FOR_TEST}@db.internal:6432/prod", "userinfo"),
    ("postgresql+psycopg://svc@db.internal:6432/prod?sslmode=require&password=${PGPASS_FOR_TEST}",
     "query"),
])
def test_a_password_with_reserved_characters_stays_one_password(
        write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, token: str,
        template: str, where: str) -> None:
    monkeypatch.setenv("PGPASS_FOR_TEST", RESERVED_PASSWORD)
    config = load_config(write_config(**{"storage.url": template}))
    url = make_url(config.storage_url())
    assert (url.host, url.port, url.database, url.username) == ("db.internal", 6432, "prod", "svc")
    assert (url.password if where == "userinfo" else url.query["password"]) == RESERVED_PASSWORD
    code, out = _check(write_config(**{"storage.url": template}),
                       env={"METASENTRY_API_TOKEN": token, "PGPASS_FOR_TEST": RESERVED_PASSWORD})
    assert code == 0, out
    assert "p@ss" not in out and "rd#1" not in out


def test_a_url_broken_by_the_environment_is_one_line_without_the_secret(
        write_config: Callable[..., Path], token: str) -> None:
    path = write_config(**{"storage.url": "postgresql+psycopg://svc:${PGPASS_FOR_TEST}@"
                                          "${PGHOST_FOR_TEST}/prod"})
    code, out = _check(path, env={"METASENTRY_API_TOKEN": token,
                                  "PGPASS_FOR_TEST": RESERVED_PASSWORD,
                                  "PGHOST_FOR_TEST": "db:not-a-port"})
    assert code == 2
    assert {line for line in out.splitlines() if line.startswith("error:")} == {
        "error: storage.url: not a valid database URL once the environment is substituted "
        "(got 'postgresql+psycopg://svc:***@${PGHOST_FOR_TEST}/prod'; check the host, port and "
        "database parts, and any ${VAR} used there)"}
    assert "p@ss" not in out and "Traceback" not in out


def test_summary_hides_a_query_string_password(write_config: Callable[..., Path],
                                               token: str) -> None:
    path = write_config(**{"storage.url": "postgresql+psycopg://svc@db/x?password=hunter2"})
    code, out = _check(path, env={"METASENTRY_API_TOKEN": token})
    assert code == 0, out
    assert "hunter2" not in out and "password=***" in out


def test_the_old_detectors_mapping_still_loads_and_says_how_to_rewrite_it(
        write_config: Callable[..., Path]) -> None:
    path = write_config(**{"detectors": {"feature_drift": {"window": 300, "step": 300}}})
    config = load_config(path, need_token=False)
    assert [(d.type, d.resolved_name()) for d in config.detectors] == [
        ("feature_drift", "feature_drift")]
    assert config.detectors[0].window == 300  # type: ignore[attr-defined]
    assert config.notes and "write a list of typed entries" in config.notes[0]
    broken = write_config("broken.yaml", **{"detectors": {"feature_drift": {"window": "x"}}})
    with pytest.raises(ConfigError) as caught:
        load_config(broken, need_token=False)
    assert any(e.startswith("detectors.feature_drift.window:") for e in caught.value.errors)


def test_detector_entries_are_checked_by_their_own_type(write_config: Callable[..., Path]
                                                        ) -> None:
    path = write_config(**{"detectors": [
        {"type": "feature_drift", "name": "drift", "window": 0},
        {"type": "mmd", "name": "x"},
        {"type": "classifier", "name": "drift"},
    ]})
    with pytest.raises(ConfigError) as caught:
        load_config(path, need_token=False)
    errors = "\n".join(caught.value.errors)
    assert "detectors[0].window:" in errors
    assert "unknown type (got 'mmd', expected one of activation_clustering, adversarial, " \
        "classifier, classifier_drift, feature_drift, " in errors


def test_the_classifier_needs_the_model_and_the_model_needs_labels(
        write_config: Callable[..., Path]) -> None:
    path = write_config(**{"detectors": [{"type": "classifier", "name": "classifier"}]})
    with pytest.raises(ConfigError, match="need the live model"):
        load_config(path, need_token=False)
    no_label = write_config("nolabel.yaml", **{"model.enabled": True, "schema.label": None,
                                               "detectors": []})
    with pytest.raises(ConfigError, match="schema.label"):
        load_config(no_label, need_token=False)


def test_a_missing_model_directory_and_signing_key_are_named(
        write_config: Callable[..., Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODEL_KEY", raising=False)
    path = write_config(**{"model.enabled": True, "model.path": str(tmp_path / "nowhere"),
                           "model.signing_key_env": "MODEL_KEY"})
    with pytest.raises(ConfigError) as caught:
        load_config(path, need_token=False)
    errors = "\n".join(caught.value.errors)
    assert "model.path: no model directory" in errors
    assert "model.signing_key_env: environment variable MODEL_KEY is not set" in errors


def test_time_windows_need_a_timestamp_field(write_config: Callable[..., Path],
                                             token: str) -> None:
    code, out = _check(write_config(**{"detectors.feature_drift.window": "5m",
                                       "detectors.feature_drift.step": None}),
                       env={"METASENTRY_API_TOKEN": token})
    assert code == 2 and "Traceback" not in out
    assert "time windows and seasonality read each record's time" in out
    assert "schema.timestamp" in out


def test_a_moving_reference_needs_a_window_detector(write_config: Callable[..., Path],
                                                    token: str) -> None:
    path = write_config(**{"reference.mode": "rolling", "detectors.feature_drift.enabled": False})
    code, out = _check(path, env={"METASENTRY_API_TOKEN": token})
    assert code == 2 and "reference.mode: rolling moves the reference of window detectors" in out
    bad = write_config("bad.yaml", **{"reference.rolling": {"follow_rate": 2}})
    code, out = _check(bad, env={"METASENTRY_API_TOKEN": token})
    assert code == 2 and "reference.rolling.follow_rate" in out


def test_model_members_are_an_opt_in_ensemble_of_the_memory_learner(
        write_config: Callable[..., Path]) -> None:
    memory = load_config(write_config(**{"model.enabled": True}), need_token=False)
    assert memory.model.learner == "memory" and memory.model.members == 1
    ensemble = load_config(write_config("ensemble.yaml", **{
        "model.enabled": True, "model.members": 3}), need_token=False)
    assert ensemble.model.members == 3
    with pytest.raises(ConfigError, match="model: .*only the memory learner is an ensemble"):
        load_config(write_config("bad.yaml", **{"model.learner": "maml", "model.members": 3}),
                    need_token=False)
    with pytest.raises(ConfigError, match="model.members"):
        load_config(write_config("zero.yaml", **{"model.members": 0}), need_token=False)


def test_rare_reference_classes_name_nothing_below_a_configured_count(
        write_config: Callable[..., Path]) -> None:
    default = load_config(write_config(**{"model.enabled": True}), need_token=False)
    assert default.model.min_reference_records_to_name == 3
    off = load_config(write_config("off.yaml", **{
        "model.enabled": True, "model.min_reference_records_to_name": 1}), need_token=False)
    assert off.model.min_reference_records_to_name == 1
    with pytest.raises(ConfigError, match="model.min_reference_records_to_name"):
        load_config(write_config("zero.yaml", **{"model.min_reference_records_to_name": 0}),
                    need_token=False)
