"""Incident policy: which detector verdicts become incidents, with what severity and key.

A detector says what it measured; this module decides what a person should see. Keys are
derived from the stream itself (the last record of a window, the first record of a group of
per-record findings), never from wall-clock time, so a record replayed after a crash maps to
the same incident and the store's unique key drops the duplicate. Per-record findings are
grouped (:mod:`agent.grouping`) so a burst is one incident with a count, never thousands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from agent.config import IncidentPolicyConfig
from agent.grouping import Group, Placement
from agent.redaction import Redactor
from detectors.base import DriftReport
from storage import IncidentExample, IncidentUpdate, NewDriftReport, NewIncident


class IncidentPolicy:
    """Turns drift reports into stored reports and, when the test rejects, incidents.

    ``redactor`` masks what ``schema.redact`` names: the categories of a redacted categorical
    feature that a drift test reports, and the ids and times of a window's span when the id or
    timestamp field is redacted.
    """

    def __init__(self, config: IncidentPolicyConfig, redactor: Redactor | None = None) -> None:
        self.config = config
        self.redactor = redactor

    def drift_severity(self, report: DriftReport) -> str:
        return "high" if report.p_value <= self.config.drift_high_severity_p else "medium"

    def drift_records(self, report: DriftReport, *, source: str, window_end_key: str,
                      span: Mapping[str, Any] | None = None,
                      ) -> tuple[NewDriftReport, NewIncident | None]:
        """The stored report for every tested window, and an incident only when it rejects."""
        if self.redactor is not None:  # before anything is read from the report
            report = self.redactor.drift_report(report)
            span = self.redactor.span(span)
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
            window_span=None if span is None else dict(span),
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


SEVERITY_BY_KIND = {"attack": "high", "novel": "medium", "poisoning": "high",
                    "adversarial": "high"}
# Findings judged with the live model: their incidents name the model version.
MODEL_KINDS = ("attack", "novel", "adversarial")


@dataclass(frozen=True)
class RecordContext:
    """What the policy needs to know about one flagged record beyond the grouping."""

    excerpt: str
    fields: Mapping[str, Any] | None
    textual: bool
    features: list[float]
    score: float
    p_value: float | None
    confidence: float | None
    explanation: Mapping[str, Any] | None


class RecordIncidents:
    """Turns grouped per-record findings into incident rows, updates and stored examples.

    With a ``redactor`` (built from ``schema.redact``), the excerpt, the fields and the
    explanation of every record an incident or example shows are masked here, before any row
    is written, so the store, the API and every sink only see the masked form.
    """

    def __init__(self, config: IncidentPolicyConfig, redactor: Redactor | None = None) -> None:
        self.config = config
        self.redactor = redactor

    def rows(self, placements: Sequence[Placement], contexts: Mapping[tuple[str, int],
                                                                       RecordContext],
             *, source: str, model_version: str | None
             ) -> tuple[list[NewIncident], list[IncidentUpdate], list[IncidentExample]]:
        """Incidents for groups opened in this batch, updates for groups continued, examples.

        ``contexts`` is keyed by (detector, batch row) for the opening record and the examples.
        Counts are absolute (the group's running total), so applying an update twice after a
        replay changes nothing.
        """
        opened: dict[str, Placement] = {}
        touched: dict[str, Group] = {}
        examples: list[IncidentExample] = []
        for placement in placements:
            group = placement.group
            touched[group.key] = group
            if placement.opened:
                opened[group.key] = placement
            if placement.example:
                context = self._shown(contexts[(placement.finding.detector,
                                                placement.finding.row)], source)
                examples.append(IncidentExample(
                    source=source, incident_offset_key=group.key, detector=group.detector,
                    offset_key=placement.finding.offset, ordinal=group.examples - 1,
                    fields=dict(context.fields or {}), textual=context.textual,
                    features=context.features, predicted_class=placement.finding.predicted,
                    confidence=context.confidence, explanation=dict(context.explanation or {}),
                ))
        incidents = []
        updates = []
        for key, group in touched.items():
            if key in opened:
                placement = opened[key]
                context = self._shown(contexts[(placement.finding.detector,
                                                placement.finding.row)], source)
                incidents.append(self._incident(group, placement, context, source=source,
                                                model_version=model_version))
            else:
                updates.append(IncidentUpdate(source=source, offset_key=key,
                                              detector=group.detector, record_count=group.count,
                                              last_offset=group.last_offset))
        return incidents, updates, examples

    def _shown(self, context: RecordContext, source: str) -> RecordContext:
        """The context as stored and shown: redacted fields masked (features stay encoded)."""
        if self.redactor is None or not self.redactor.active:
            return context
        return replace(
            context,
            excerpt=self.redactor.excerpt(context.excerpt, context.fields, source=source),
            fields=self.redactor.fields(context.fields),
            explanation=self.redactor.explanation(context.explanation))

    def _incident(self, group: Group, placement: Placement, context: RecordContext, *,
                  source: str, model_version: str | None) -> NewIncident:
        # A novel record belongs to no known class; the nearest one only tells where it sits.
        named = group.predicted if group.kind != "novel" else None
        if group.kind == "novel":
            what = "novel kind of record" + (
                f", nearest known class {group.predicted}" if group.predicted else "")
        elif group.kind == "adversarial":
            what = "suspected adversarial input" + (
                f", classified as {group.predicted}" if group.predicted else "")
        elif group.kind == "poisoning":
            what = "suspected poisoned record" + (
                f", labelled {group.predicted}" if group.predicted else "")
        else:
            what = f"{group.kind}: {group.predicted}" if group.predicted else group.kind
        explanation: dict[str, Any] = {
            "summary": what,
            "kind": group.kind,
            "predicted_class": named,
            "nearest_class": group.predicted,
            "detector": group.detector,
            "first_record": dict(context.explanation or {}),
            "group_span_records": self.config.group_span_records,
        }
        if model_version is not None and group.kind in MODEL_KINDS:
            explanation["model_version"] = model_version
        return NewIncident(
            kind=group.kind, severity=SEVERITY_BY_KIND.get(group.kind, "medium"),
            source=source, offset_key=group.key, detector=group.detector,
            score=_finite(context.score), p_value=_finite(context.p_value),
            explanation=explanation, record_excerpt=context.excerpt[: self.config.excerpt_chars],
            predicted_class=named, confidence=_finite(context.confidence),
            model_version=model_version if group.kind in MODEL_KINDS else None,
            record_count=group.count, first_offset=group.first_offset,
            last_offset=group.last_offset,
        )


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
