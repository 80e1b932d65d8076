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
#: pending: awaits screening; held: screening suspects it; released: an analyst overrode the
#: hold; used: enrolled by a model version; rejected: its version failed the canary; noted:
#: a label on an incident without example records (nothing to learn from).
LABEL_STATUSES: tuple[str, ...] = ("pending", "held", "released", "used", "rejected", "noted")
#: candidate: being evaluated; active: serving; rejected: failed its canary; retired: replaced.
MODEL_STATUSES: tuple[str, ...] = ("candidate", "active", "rejected", "retired")

#: where a reference version came from: the configured file, the rolling reference, an
#: approved benign-drift window merged in, a rollback to an earlier version; candidates are
#: a drift window's records (``window``) or a rolling reference held back (``rolling``)
REFERENCE_ORIGINS: tuple[str, ...] = ("initial", "rolling", "approved", "rollback", "window")
#: versions: active → superseded (→ pruned: data dropped); candidates: candidate → approved
#: (labelled ``benign_drift``) → applied (merged into a version by the agent)
REFERENCE_STATUSES: tuple[str, ...] = ("active", "superseded", "pruned", "candidate",
                                       "approved", "applied")
#: pending: waiting for (another) delivery attempt; delivered: the sink took it; failed: the
#: sink refused it for good (kept, with its last error, for an operator to look at)
OUTBOX_STATUSES: tuple[str, ...] = ("pending", "delivered", "failed")
#: what the audit log records (``storage.audit``): label given, label status moved by an
#: actor or by adaptation, model version activated or rolled back, reference version rolled
#: back or a drift window approved as normal (a ``benign_drift`` label)
AUDIT_ACTIONS: tuple[str, ...] = ("label.add", "label.hold", "label.release", "label.use",
                                  "label.reject", "model.activate", "model.rollback",
                                  "reference.rollback", "reference.approve")

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
MAX_SINK_CHARS = 100
MAX_HOLDER_CHARS = 100
MAX_AUDIT_ACTION_CHARS = 32
MAX_AUDIT_TARGET_CHARS = 600
MAX_AUDIT_ORIGIN_CHARS = 300


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
    record_count: int = 1
    first_offset: str | None = None
    last_offset: str | None = None

    def __post_init__(self) -> None:
        require_text("kind", self.kind, MAX_KIND_CHARS)
        if self.record_count < 1:
            raise ValueError(f"record_count must be at least 1, got {self.record_count}.")
        _require_optional_text("first_offset", self.first_offset, MAX_OFFSET_KEY_CHARS)
        _require_optional_text("last_offset", self.last_offset, MAX_OFFSET_KEY_CHARS)
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
class IncidentUpdate:
    """A grouped incident that gained records in a later batch (absolute, replay-safe values)."""

    source: str
    offset_key: str
    detector: str
    record_count: int
    last_offset: str

    def __post_init__(self) -> None:
        require_text("offset_key", self.offset_key, MAX_OFFSET_KEY_CHARS)
        require_text("last_offset", self.last_offset, MAX_OFFSET_KEY_CHARS)
        if self.record_count < 1:
            raise ValueError(f"record_count must be at least 1, got {self.record_count}.")


@dataclass(frozen=True)
class IncidentExample:
    """An example record of an incident (identified by its key), kept whole for adaptation."""

    source: str
    incident_offset_key: str
    detector: str
    offset_key: str
    ordinal: int
    fields: Mapping[str, Any]
    textual: bool
    features: Sequence[float]
    predicted_class: str | None = None
    confidence: float | None = None
    explanation: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_text("offset_key", self.offset_key, MAX_OFFSET_KEY_CHARS)
        _require_optional_text("predicted_class", self.predicted_class, MAX_CLASS_CHARS)
        _require_not_nan("confidence", self.confidence)


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
    # Which records the window held: first and last offset key, and first and last id and
    # timestamp when the schema names those fields.
    window_span: Mapping[str, Any] | None = None

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
    record_count: int = 1
    first_offset: str | None = None
    last_offset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _as_json_ready(self)


@dataclass(frozen=True)
class IncidentRecord:
    """An example record of an incident as stored."""

    id: int
    incident_id: int
    created_at: datetime
    offset_key: str
    ordinal: int
    fields: dict[str, Any]
    textual: bool
    features: list[float]
    predicted_class: str | None
    confidence: float | None
    explanation: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return _as_json_ready(self)


@dataclass(frozen=True)
class Label:
    """One analyst verdict on one record; the label trail is append-only, statuses move."""

    id: int
    incident_id: int
    label: str
    actor: str
    note: str | None
    created_at: datetime
    incident_record_id: int | None = None
    status: str = "noted"
    status_reason: str | None = None
    model_version: str | None = None
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return _as_json_ready(self)


@dataclass(frozen=True)
class AuditEntry:
    """One row of the append-only audit log: who changed what the agent believes, from where.

    ``target`` names what changed (``incident:42``, ``label:7``, ``model:3``,
    ``reference:src/detector/v2``); ``origin`` where the request came from (``api:<ip>``,
    ``cli:<user>@<host>``, ``agent:<host>``); ``detail`` a small JSON object (the label, the
    previously active version, ...).
    """

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    origin: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return _as_json_ready(self)


@dataclass(frozen=True)
class LabelledRecord:
    """A label with the record it was given on: what adaptation learns from."""

    label_id: int
    label: str
    actor: str
    status: str
    fields: dict[str, Any]
    textual: bool
    incident_id: int
    record_id: int


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
    window_span: dict[str, Any] | None = None

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
    status: str = "retired"
    parent: str | None = None
    base_sha256: str | None = None
    benign_class: str | None = None
    classes: list[str] | None = None
    label_ids: list[int] = field(default_factory=list)
    trigger: str | None = None
    reasons: list[str] | None = None
    settings: dict[str, Any] | None = None  # None: registered before settings were recorded

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_ids", list(self.label_ids or []))

    def to_dict(self) -> dict[str, Any]:
        return _as_json_ready(self)


@dataclass(frozen=True)
class NewReferenceVersion:
    """A reference version (``candidate=False``) or candidate to store with a batch's commit.

    A version becomes the active one of its (source, detector), superseding the previous;
    a candidate is kept under its incident's key until a ``benign_drift`` label approves it.
    ``data`` is the npz archive of the records (``detectors.reference.pack``).
    """

    source: str
    detector: str
    origin: str
    data: bytes
    sha256: str
    n_records: int
    summary: Mapping[str, Any]
    version: int | None = None
    parent: int | None = None
    incident_key: str | None = None
    actor: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        require_text("source", self.source, MAX_SOURCE_CHARS)
        require_text("detector", self.detector, MAX_DETECTOR_CHARS)
        if self.origin not in REFERENCE_ORIGINS:
            raise ValueError(f"origin must be one of {list(REFERENCE_ORIGINS)}, "
                             f"got {self.origin!r}.")
        if (self.version is None) == (self.incident_key is None):
            raise ValueError("a reference row is either a version (version set) or a "
                             "candidate (incident_key set), not both or neither.")
        _require_optional_text("incident_key", self.incident_key, MAX_OFFSET_KEY_CHARS)
        _require_optional_text("actor", self.actor, MAX_ACTOR_CHARS)


@dataclass(frozen=True)
class ReferenceVersion:
    """A stored reference version or candidate, without its data (see ``reference_data``)."""

    id: int
    created_at: datetime
    source: str
    detector: str
    version: int | None
    origin: str
    status: str
    parent: int | None
    incident_key: str | None
    actor: str | None
    note: str | None
    n_records: int
    sha256: str
    summary: dict[str, Any]
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return _as_json_ready(self)


class ReferenceVersionNotFound(KeyError):
    """Raised when a reference version does not exist (API maps it to 404)."""

    def __str__(self) -> str:
        return f"reference version {self.args[0]} does not exist"


@dataclass(frozen=True)
class CommitResult:
    """What one batch changed, so the pipeline can count and ack without a second query."""

    incidents_created: int
    incidents_duplicate: int
    quarantined: int
    drift_reports: int
    created_ids: tuple[int, ...]
    incidents_updated: int = 0
    examples_stored: int = 0
    #: outbox rows queued for the alert sinks in the same transaction (``storage.outbox``)
    alerts_queued: int = 0


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
    """The database could not be reached, was busy or did not answer in time; retry later."""


class StoreRejected(ValueError):
    """The database refused the data itself; retrying the same values would fail again.

    The pipeline answers it by storing degraded copies of the offending rows (see
    ``agent.salvage``) rather than by retrying, which would stop ingestion for good.
    """
