"""``schema.redact``: masked fields never reach an incident's excerpt, fields or explanation."""

from __future__ import annotations

import json

import pytest

from agent.config import AgentConfig, IncidentPolicyConfig, parse_config
from agent.grouping import Finding, Grouper
from agent.incidents import RecordContext, RecordIncidents
from agent.redaction import MASK, WITHHELD, Redactor, redact_excerpt

IP = "10.1.2.3"

SCHEMA = """
schema:
  columns: [src_ip, user, bytes, service]
  features: [{{name: bytes, type: numeric}}, {{name: service, type: categorical}}]
  redact: {redact}
reference: {{path: r.csv}}
sources: [{{type: stdin}}, {{type: csv_file, name: semi, path: s.csv, delimiter: ';'}}]
"""


def _config(redact: str = "[src_ip, {field: user, mode: hash}]") -> AgentConfig:
    return parse_config(SCHEMA.format(redact=redact))


def _redactor(key: str = "k1") -> Redactor:
    return Redactor.from_config(_config(), {"METASENTRY_REDACT_KEY": key})


def test_a_json_excerpt_is_reserialised_with_the_values_masked() -> None:
    fields = {"src_ip": IP, "user": "alice", "bytes": 12, "nested": {"src_ip": "x"}}
    out = _redactor().excerpt(json.dumps(fields), fields)
    shown = json.loads(out)
    assert shown["src_ip"] == MASK and shown["bytes"] == 12
    assert shown["user"].startswith("[redacted:") and "alice" not in out
    assert shown["nested"] == {"src_ip": "x"}, "only top-level fields are redacted"


def test_a_csv_excerpt_masks_the_named_cells_with_the_sources_delimiter() -> None:
    redactor = _redactor()
    fields = {"src_ip": IP, "user": "bob, jr", "bytes": "12", "service": "http"}
    out = redactor.excerpt(f'{IP},"bob, jr",12,http', fields)
    assert out.startswith(f"{MASK},[redacted:") and out.endswith(",12,http")
    assert IP not in out and "bob" not in out
    semi = redactor.excerpt(f"{IP};bob;12;http", fields | {"user": "bob"}, source="semi")
    assert semi.split(";")[0] == MASK and semi.split(";")[2:] == ["12", "http"]


def test_a_hash_groups_equal_values_and_depends_on_the_key() -> None:
    a, b = _redactor("k1"), _redactor("k2")
    assert a.value("user", "alice") == a.value("user", "alice") != a.value("user", "carol")
    assert a.value("user", "alice") != b.value("user", "alice")
    assert a.value("bytes", 12) == 12, "a field not redacted is shown as it is"


def test_fields_and_explanations_are_masked() -> None:
    redactor = _redactor()
    assert redactor.fields({"src_ip": IP, "bytes": 1}) == {"src_ip": MASK, "bytes": 1}
    assert redactor.fields(None) is None
    explanation = {"top": [{"feature": "src_ip", "value": IP, "nearest": "10.9.9.9"},
                           {"feature": "bytes", "value": 3.0, "nearest": 4.0}],
                   "src_ip": IP}
    shown = redactor.explanation(explanation)
    assert IP not in json.dumps(shown) and "10.9.9.9" not in json.dumps(shown)
    assert shown["top"][1] == {"feature": "bytes", "value": 3.0, "nearest": 4.0}


def test_an_unparsed_record_is_masked_when_it_parses_and_withheld_when_not() -> None:
    redactor = _redactor()
    assert json.loads(redactor.excerpt(f'{{"src_ip": "{IP}"}}', None))["src_ip"] == MASK
    assert redactor.excerpt(f"{IP},bob,12,http", None).startswith(MASK + ",")
    assert redactor.excerpt(f'{{"src_ip": "{IP}", ', None) == WITHHELD
    assert redactor.excerpt(f"{IP},bob", None) == WITHHELD  # cells do not match the columns


def test_without_redact_nothing_changes() -> None:
    redactor = Redactor.from_config(_config("[]"))
    assert not redactor.active
    assert redactor.excerpt("a,b", None) == "a,b"
    assert redact_excerpt(None, "a,b", None) == "a,b"


def test_incident_rows_and_examples_carry_only_masked_values() -> None:
    redactor = _redactor()
    fields = {"src_ip": IP, "user": "alice", "bytes": "12", "service": "http"}
    context = RecordContext(excerpt=f"{IP},alice,12,http", fields=fields, textual=True,
                            features=[0.5, 1.0], score=9.0, p_value=0.001, confidence=None,
                            explanation={"nearest": [{"feature": "src_ip", "value": IP}]})
    placements = Grouper(span_records=100, span_s=None, examples=2).place([Finding(
        detector="d", kind="novel", predicted=None, index=0, offset="o:0", time=None, row=0)])
    incidents, _, examples = RecordIncidents(IncidentPolicyConfig(), redactor).rows(
        placements, {("d", 0): context}, source="stdin", model_version=None)
    stored = json.dumps([i.__dict__ for i in incidents] + [e.__dict__ for e in examples],
                        default=str)
    assert IP not in stored and "alice" not in stored
    assert (incidents[0].record_excerpt or "").startswith(MASK)
    assert examples[0].fields["bytes"] == "12" and examples[0].features == [0.5, 1.0]


@pytest.mark.parametrize("redact, expected", [
    ("[src_ipp]", "schema.redact[0]: not a field of the schema (got 'src_ipp'"),
    ("[user, {field: nope}]", "schema.redact[1]: not a field of the schema (got 'nope'"),
    ("[user, user]", "schema.redact[1]: 'user' is redacted twice"),
    ("[{field: user, mode: blur}]", "schema.redact[0].mode: invalid value (got 'blur'"),
    ("[3]", "schema.redact[0]: invalid value (got 3, expected a mapping)"),
])
def test_config_errors_name_the_yaml_path(redact: str, expected: str) -> None:
    from agent.config import ConfigError

    with pytest.raises(ConfigError) as err:
        _config(redact)
    assert any(expected in line for line in err.value.errors), err.value.errors


def test_hash_mode_needs_its_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.config import environment_errors

    monkeypatch.delenv("METASENTRY_REDACT_KEY", raising=False)
    errors = environment_errors(_config(), need_token=False)
    assert any(e.startswith("schema.redact[1].mode: environment variable "
                            "METASENTRY_REDACT_KEY is not set") for e in errors), errors
    with pytest.raises(ValueError, match="METASENTRY_REDACT_KEY"):
        Redactor.from_config(_config(), {})


def test_a_drift_incident_never_names_a_redacted_category() -> None:
    from agent.incidents import IncidentPolicy
    from detectors import FeatureTest
    from detectors._feature_tests import CategoryShift
    from detectors.base import DriftReport

    test = FeatureTest(name="user", kind="categorical", test="chi2", statistic=40.0,
                       p_value=1e-9, adjusted_p_value=1e-9, rejected=True, effect_size=0.6,
                       new_category_fraction=0.0, reference_new_category_fraction=0.0,
                       category_shifts=(CategoryShift("alice", 0.1, 0.7),))
    report = DriftReport(detector="feature_drift", n_reference=100, n_window=100, alpha=0.01,
                         correction="bh", statistic=0.6, p_value=1e-9, rejected=True,
                         features=(test,), top_features=("user",), records_seen=100)
    assert "alice" in report.summary()
    stored, incident = IncidentPolicy(IncidentPolicyConfig(), _redactor()).drift_records(
        report, source="stdin", window_end_key="o:99")
    assert incident is not None
    shown = json.dumps([stored.__dict__, incident.__dict__], default=str)
    assert "alice" not in shown and "[redacted:" in (incident.record_excerpt or "")


def test_the_docstring_examples_run() -> None:
    import doctest

    import agent.redaction

    assert doctest.testmod(agent.redaction).failed == 0
