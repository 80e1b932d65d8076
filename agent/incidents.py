"""Incident policy: which detector verdicts become incidents, with what severity and key.

A detector says what it measured; this module decides what a person should see. Keys are
derived from the stream itself (the last record of a window), never from wall-clock time,
so a record replayed after a crash maps to the same incident and the store's unique key
drops the duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.config import IncidentPolicyConfig
from detectors.feature_drift import DriftReport
from storage import NewDriftReport, NewIncident


class IncidentPolicy:
    """Turns drift reports into stored reports and, when the test rejects, incidents."""

    def __init__(self, config: IncidentPolicyConfig) -> None:
        self.config = config

    def drift_severity(self, report: DriftReport) -> str:
        return "high" if report.p_value <= self.config.drift_high_severity_p else "medium"

    def drift_records(self, report: DriftReport, *, source: str, window_end_key: str,
                      span: Mapping[str, Any] | None = None,
                      ) -> tuple[NewDriftReport, NewIncident | None]:
        """The stored report for every tested window, and an incident only when it rejects."""
        details = report.to_dict()
        stored = NewDriftReport(
            source=source,
            detector=report.detector,
            window_end_key=window_end_key,
            n_reference=report.n_reference,
            n_window=report.n_window,
            statistic=float(report.statistic),
            p_value=float(report.p_value),
            rejected=bool(report.rejected),
            features=details["features"],
            top_features=list(report.top_features),
        )
        if not report.rejected:
            return stored, None
        top = set(report.top_features)
        explanation: dict[str, Any] = {
            "summary": report.summary(),
            "top_features": list(report.top_features),
            "features": [f for f in details["features"] if f["name"] in top],
            "alpha": report.alpha,
            "correction": report.correction,
            "n_window": report.n_window,
            "n_reference": report.n_reference,
            "window": dict(span or {}),  # which records: offsets, ids and times when known
        }
        incident = NewIncident(
            kind="drift",
            severity=self.drift_severity(report),
            source=source,
            offset_key=f"window:{window_end_key}",
            detector=report.detector,
            score=float(report.statistic),
            p_value=float(report.p_value),
            explanation=explanation,
            record_excerpt=report.summary()[: self.config.excerpt_chars],
        )
        return stored, incident
