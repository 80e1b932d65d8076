"""The store's vocabulary: what the pipeline hands in and what readers get back.

Write models (``New*``, ``QuarantinedRecord``) validate themselves on construction, so a bad
value is reported where it was made rather than as a database error half-way through a batch.
Read models are plain frozen snapshots: they never hold a session or lazy-load anything, so
they can cross threads and be serialised with :meth:`to_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
STATUSES: tuple[str, ...] = ("open", "labelled", "dismissed", "resolved")

# Column widths, shared with storage.models so validation and schema cannot disagree.
MAX_KIND_CHARS = 32
MAX_SOURCE_CHARS = 255
MAX_OFFSET_KEY_CHARS = 255
MAX_DETECTOR_CHARS = 100
MAX_REASON_CHARS = 32
MAX_LABEL_CHARS = 100
MAX_ACTOR_CHARS = 100
MAX_CLASS_CHARS = 100
MAX_MODEL_VERSION_CHARS = 100
MAX_EXCERPT_CHARS = 2000


def require_text(name: str, value: str, max_chars: int) -> None:
    """Reject empty or over-long text before it reaches a VARCHAR column (PostgreSQL errors)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}.")
    if len(value) > max_chars:
        raise ValueError(f"{name} must be at most {max_chars} characters, got {len(value)}.")


def _require_optional_text(name: str, value: str | None, max_chars: int) -> None:
    if value is not None:
        require_text(name, value, max_chars)


def _require_not_nan(name: str, value: float | None) -> None:
    # NaN cannot be stored consistently (SQLite turns it into NULL, PostgreSQL keeps it), so
    # the caller must say "no value" explicitly with None.
    if value is not None and math.isnan(value):
        raise ValueError(f"{name} must not be NaN; use None when there is no value.")


def _require_aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}.")


def _as_json_ready(record: Any) -> dict[str, Any]:
    """Shallow conversion: datetimes become ISO strings, everything else is already JSON."""
    ready: dict[str, Any] = {}
    for item in fields(record):
        value = getattr(record, item.name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        ready[item.name] = value
    return ready


# --------------------------------------------------------------------------- write models


@dataclass(frozen=True)
class NewIncident:
    """One finding the pipeline wants recorded; idempotent on (source, offset_key, detector)."""

    kind: str
    severity: str
    source: str
    offset_key: str
    detector: str
    score: float | None = None
    p_value: float | None = None
    explanation: Mapping[str, Any] = field(default_factory=dict)
    record_excerpt: str | None = None
    predicted_class: str | None = None
    confidence: float | None = None
    model_version: str | None = None
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        require_text("kind", self.kind, MAX_KIND_CHARS)
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {list(SEVERITIES)}, got {self.severity!r}.")
        require_text("source", self.source, MAX_SOURCE_CHARS)
        require_text("offset_key", self.offset_key, MAX_OFFSET_KEY_CHARS)
        require_text("detector", self.detector, MAX_DETECTOR_CHARS)
        _require_optional_text("predicted_class", self.predicted_class, MAX_CLASS_CHARS)
        _require_optional_text("model_version", self.model_version, MAX_MODEL_VERSION_CHARS)
        _require_not_nan("score", self.score)
        _require_not_nan("p_value", self.p_value)
        _require_not_nan("confidence", self.confidence)
        _require_aware("created_at", self.created_at)


@dataclass(frozen=True)
class QuarantinedRecord:
    """A record that could not be scored; kept so an analyst can see what the source sent."""

    source: str
    offset_key: str
    reason: str
    detail: str
    raw_excerpt: str

    def __post_init__(self) -> None:
        require_text("source", self.source, MAX_SOURCE_CHARS)
        require_text("offset_key", self.offset_key, MAX_OFFSET_KEY_CHARS)
        require_text("reason", self.reason, MAX_REASON_CHARS)


@dataclass(frozen=True)
class NewDriftReport:
    """The outcome of one window test; idempotent on (source, detector, window_end_key)."""

    source: str
    detector: str
    window_end_key: str
    n_reference: int
    n_window: int
    statistic: float
    p_value: float
    rejected: bool
    features: Sequence[Mapping[str, Any]]
    top_features: Sequence[str]
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        require_text("source", self.source, MAX_SOURCE_CHARS)
        require_text("detector", self.detector, MAX_DETECTOR_CHARS)
        require_text("window_end_key", self.window_end_key, MAX_OFFSET_KEY_CHARS)
        _require_not_nan("statistic", self.statistic)
        _require_not_nan("p_value", self.p_value)
        _require_aware("created_at", self.created_at)


# --------------------------------------------------------------------------- read models


@dataclass(frozen=True)
class Incident:
    """An incident as stored, with its triage state."""

    id: int
    created_at: datetime
    updated_at: datetime
    kind: str
    severity: str
    status: str
    source: str
    offset_key: str
    detector: str
    score: float | None
    p_value: float | None
    explanation: dict[str, Any]
    record_excerpt: str | None
    predicted_class: str | None
    confidence: float | None
    analyst_label: str | None
    model_version: str | None

    def to_dict(self) -> dict[str, Any]:
        return _as_json_ready(self)


@dataclass(frozen=True)
class Label:
    """One analyst verdict; labels are append-only so adaptation can replay them in order."""

    id: int
    incident_id: int
    label: str
    actor: str
    note: str | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return _as_json_ready(self)


@dataclass(frozen=True)
class QuarantineEntry:
    id: int
    created_at: datetime
    source: str
    offset_key: str
    reason: str
    detail: str
    raw_excerpt: str

    def to_dict(self) -> dict[str, Any]:
        return _as_json_ready(self)


@dataclass(frozen=True)
class DriftReportRow:
    id: int
    created_at: datetime
    source: str
    detector: str
    window_end_key: str
    n_reference: int
    n_window: int
    statistic: float
    p_value: float
    rejected: bool
    features: list[dict[str, Any]]
    top_features: list[str]

    def to_dict(self) -> dict[str, Any]:
        return _as_json_ready(self)


@dataclass(frozen=True)
class ModelVersion:
    """A registered classifier; exactly one (or none, before the first) is active."""

    version: str
    created_at: datetime
    algorithm: str
    path: str
    sha256: str
    metrics: dict[str, Any]
    active: bool

    def to_dict(self) -> dict[str, Any]:
        return _as_json_ready(self)


@dataclass(frozen=True)
class CommitResult:
    """What one batch changed, so the pipeline can count and ack without a second query."""

    incidents_created: int
    incidents_duplicate: int
    quarantined: int
    drift_reports: int
    created_ids: tuple[int, ...]


# --------------------------------------------------------------------------- errors


class IncidentNotFound(KeyError):
    """Raised when an incident id does not exist (API maps it to 404)."""

    def __init__(self, incident_id: int) -> None:
        super().__init__(incident_id)
        self.incident_id = incident_id

    def __str__(self) -> str:
        return f"incident {self.incident_id} does not exist"


class ModelVersionNotFound(KeyError):
    """Raised when activating a model version that was never registered."""

    def __init__(self, version: str) -> None:
        super().__init__(version)
        self.version = version

    def __str__(self) -> str:
        return f"model version {self.version!r} is not registered"


class StoreUnavailable(RuntimeError):
    """The database could not be reached or was busy; retrying later may succeed."""
