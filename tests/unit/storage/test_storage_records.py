"""The write models refuse bad values where they are built, not half-way through a batch."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from storage import (
    Incident,
    IncidentNotFound,
    NewDriftReport,
    NewIncident,
    QuarantinedRecord,
    StoreUnavailable,
)


def new_incident(**overrides: object) -> NewIncident:
    values: dict[str, object] = {
        "kind": "drift",
        "severity": "medium",
        "source": "s",
        "offset_key": "1",
        "detector": "mmd",
    }
    values.update(overrides)
    return NewIncident(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"severity": "urgent"}, "severity must be one of"),
        ({"kind": ""}, "kind must be a non-empty string"),
        ({"kind": "k" * 33}, "kind must be at most 32"),
        ({"source": ""}, "source must be a non-empty string"),
        ({"offset_key": "o" * 256}, "offset_key must be at most 255"),
        ({"detector": None}, "detector must be a non-empty string"),
        ({"score": math.nan}, "score must not be NaN"),
        ({"p_value": math.nan}, "p_value must not be NaN"),
        ({"confidence": math.nan}, "confidence must not be NaN"),
        ({"created_at": datetime(2024, 1, 1)}, "created_at must be timezone-aware"),
    ],
)
def test_new_incident_rejects_bad_values(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        new_incident(**overrides)


def test_new_incident_accepts_every_severity_and_infinite_scores() -> None:
    for severity in ("info", "low", "medium", "high", "critical"):
        assert new_incident(severity=severity, score=math.inf).severity == severity


def test_quarantined_record_needs_a_bounded_reason() -> None:
    with pytest.raises(ValueError, match="reason must be at most 32"):
        QuarantinedRecord(source="s", offset_key="1", reason="r" * 40, detail="", raw_excerpt="")


def test_drift_report_rejects_nan_statistics() -> None:
    with pytest.raises(ValueError, match="statistic must not be NaN"):
        NewDriftReport(
            source="s",
            detector="mmd",
            window_end_key="w",
            n_reference=1,
            n_window=1,
            statistic=math.nan,
            p_value=0.5,
            rejected=False,
            features=[],
            top_features=[],
        )


def test_incident_to_dict_is_json_ready() -> None:
    moment = datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC)
    stored = Incident(
        id=1,
        created_at=moment,
        updated_at=moment,
        kind="drift",
        severity="low",
        status="open",
        source="s",
        offset_key="1",
        detector="mmd",
        score=None,
        p_value=0.2,
        explanation={"a": [1]},
        record_excerpt=None,
        predicted_class=None,
        confidence=None,
        analyst_label=None,
        model_version=None,
    )
    data = json.loads(json.dumps(stored.to_dict()))
    assert data["created_at"] == "2024-02-03T04:05:06+00:00"
    assert data["explanation"] == {"a": [1]}
    assert data["id"] == 1


def test_errors_say_what_is_missing() -> None:
    assert str(IncidentNotFound(42)) == "incident 42 does not exist"
    assert isinstance(IncidentNotFound(42), KeyError)
    assert issubclass(StoreUnavailable, RuntimeError)
